"""Durable session log (SQLite, WAL): one row per scored pair, committed as it is scored.

WAL with synchronous=NORMAL makes every committed transaction survive a killed process (only an OS
crash or power loss can lose the last commits), and a reader never blocks the writer, so a session can
be watched while it runs. One commit per pair keeps the loss window under a second at any frame rate
the scorer reaches.

Schema 2 (PRAGMA user_version) adds what a session report draws: the mode timeline (one row per
change), AI availability changes (events of kind "ai"), saved snapshots, the run's frame-level stats
and the session's variant and end time. It only adds tables and columns, so a log from an older version
still opens (its missing columns are added on open; the report says what it lacks).
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
  id INTEGER PRIMARY KEY, started REAL, source TEXT, package TEXT, package_hash TEXT, backend TEXT, toolkit TEXT,
  variant TEXT, ended REAL);
CREATE TABLE IF NOT EXISTS pairs (
  id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, t_source REAL, frame_gs INTEGER, frame_doppler INTEGER,
  section INTEGER, layout TEXT, similarity REAL,
  sh INTEGER, vs INTEGER, combined INTEGER, sh_agree INTEGER, vs_agree INTEGER,
  sh_models TEXT, vs_models TEXT, sh_prob TEXT, vs_prob TEXT,
  agg_sh INTEGER, agg_vs INTEGER, agg_combined INTEGER, agg_pairs INTEGER, stable INTEGER,
  latency_ms TEXT, package_hash TEXT);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, kind TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS modes (
  id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, frame INTEGER, mode TEXT);
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, path TEXT, frame INTEGER, section INTEGER,
  sh INTEGER, vs INTEGER, combined INTEGER, heat INTEGER);
CREATE TABLE IF NOT EXISTS run_stats (
  session INTEGER PRIMARY KEY, t_wall REAL, report TEXT);
"""
SCHEMA_VERSION = 2


def _js(a) -> str:
    return json.dumps(np.round(np.asarray(a, np.float64), 6).tolist() if np.asarray(a).dtype.kind == "f"
                      else np.asarray(a).tolist())


def _schema_columns() -> dict:
    """{table: [(column, type), ...]} of SCHEMA, to bring a log written by an older version up to date."""
    out = {}
    for m in re.finditer(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\);", SCHEMA, re.S):
        cols = [c.strip().split()[:2] for c in m.group(2).split(",")]
        out[m.group(1)] = [(c[0], c[1]) for c in cols if len(c) == 2 and c[0] not in ("id", "session")]
    return out


class SessionLog:
    """`busy_ms`: how long a write waits for another process's lock before it fails (the run loop
    keeps the row and retries on the next pair rather than holding the feed)."""

    def __init__(self, path, source: str = "", package: str = "", package_hash: str = "", backend: str = "",
                 busy_ms: int = 5000, variant: str | None = None):
        from rating_edge import __version__

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.migrated: list[str] = []  # "table.column" added to a log from an older version
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                  timeout=busy_ms / 1000)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._migrate()
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self.db.close()
            raise
        self.package_hash = package_hash
        cur = self.db.execute("INSERT INTO sessions (started, source, package, package_hash, backend, toolkit, variant) "
                              "VALUES (?,?,?,?,?,?,?)",
                              (time.time(), source, package, package_hash, backend, __version__, variant))
        self.session = cur.lastrowid
        self.rows = 0
        self._mode = None
        self._ai = True  # a session starts available; only changes are logged

    def _migrate(self) -> None:
        for table, cols in _schema_columns().items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for name, typ in cols:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {typ}")
                    self.migrated.append(f"{table}.{name}")

    def log_pair(self, pair, scores: dict, agg, latency_ms: dict, sh_prob, vs_prob) -> int:
        """One committed row (autocommit mode: each INSERT is its own transaction)."""
        row = (self.session, time.time(), float(pair.t), int(pair.frame_gs), int(pair.frame_doppler), int(pair.section),
               pair.layout, float(pair.similarity), int(scores["sh"]), int(scores["vs"]), int(scores["combined"]),
               int(scores["sh_agree"]), int(scores["vs_agree"]), _js(scores["sh_models"]), _js(scores["vs_models"]),
               _js(sh_prob), _js(vs_prob),
               None if agg is None else agg.sh, None if agg is None else agg.vs,
               None if agg is None else agg.combined, None if agg is None else agg.pairs,
               None if agg is None else int(agg.stable), json.dumps({k: round(float(v), 3) for k, v in latency_ms.items()}),
               self.package_hash)
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO pairs (session, t_wall, t_source, frame_gs, frame_doppler, section, layout, similarity, "
                "sh, vs, combined, sh_agree, vs_agree, sh_models, vs_models, sh_prob, vs_prob, agg_sh, agg_vs, "
                "agg_combined, agg_pairs, stable, latency_ms, package_hash) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            self.rows += 1
            return cur.lastrowid

    def event(self, kind: str, message: str) -> None:
        with self._lock:
            self.db.execute("INSERT INTO events (session, t_wall, kind, message) VALUES (?,?,?,?)",
                            (self.session, time.time(), kind, message))

    def mode(self, frame: int, mode: str) -> None:
        """The screen's mode, logged when it changes (a timeline, not one row per frame)."""
        if mode == self._mode:
            return
        self._mode = mode
        with self._lock:
            self.db.execute("INSERT INTO modes (session, t_wall, frame, mode) VALUES (?,?,?,?)",
                            (self.session, time.time(), int(frame), mode))

    def ai(self, available: bool, reason: str = "") -> None:
        """AI availability, logged when it changes: "unavailable: REASON" opens a period, "available" ends it."""
        if available == self._ai:
            return
        self._ai = available
        self.event("ai", "available" if available else f"unavailable: {reason}".rstrip(": "))

    def snapshot(self, path, frame: int | None, result=None, heat: bool = False) -> None:
        """A saved snapshot with what it showed: the pair's section and grades, and whether a heatmap was drawn."""
        sc = getattr(result, "scores", None) or {}
        pair = getattr(result, "pair", None)
        with self._lock:
            self.db.execute("INSERT INTO snapshots (session, t_wall, path, frame, section, sh, vs, combined, heat) "
                            "VALUES (?,?,?,?,?,?,?,?,?)",
                            (self.session, time.time(), str(Path(path).resolve()), frame,
                             None if pair is None else int(pair.section),
                             *(None if g not in sc else int(sc[g]) for g in ("sh", "vs", "combined")), int(heat)))

    def finish(self, report: dict) -> None:
        """The run's frame-level stats (frames, modes, per-stage latency) and the session's end time."""
        now = time.time()
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO run_stats (session, t_wall, report) VALUES (?,?,?)",
                            (self.session, now, json.dumps(report)))
            self.db.execute("UPDATE sessions SET ended=? WHERE id=?", (now, self.session))

    def close(self) -> None:
        with self._lock:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self.db.close()


def read_pairs(path) -> list[dict]:
    """All logged pairs (for tests and reports)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM pairs ORDER BY id")]
    finally:
        db.close()


def _tables(db) -> set:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def read_session(path, session: int | None = None) -> dict:
    """One session of a log, for reports: {"schema", "sessions" (ids), "session" (its row), "pairs",
    "events", "modes", "snapshots", "stats"}. What a schema-1 log never recorded is None, not empty, so a
    report can tell "none happened" from "not logged". `session` defaults to the last one."""
    from rating_edge.errors import RatingEdgeError

    p = Path(path)
    if not p.is_file():
        raise RatingEdgeError(f"{p}: no such session log")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        tables = _tables(db)
    except sqlite3.DatabaseError as e:
        raise RatingEdgeError(f"{p}: not a session log ({e})") from None
    try:
        if not {"sessions", "pairs", "events"} <= tables:
            raise RatingEdgeError(f"{p}: not a rating-edge session log (tables: {', '.join(sorted(tables)) or 'none'})")
        ids = [r[0] for r in db.execute("SELECT id FROM sessions ORDER BY id")]
        if not ids:
            raise RatingEdgeError(f"{p}: the log holds no session")
        sid = ids[-1] if session is None else int(session)
        if sid not in ids:
            raise RatingEdgeError(f"{p}: no session {sid} (sessions: {', '.join(map(str, ids))})")

        def rows(table):
            if table not in tables:
                return None
            return [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE session=? ORDER BY rowid", (sid,))]

        stats = rows("run_stats")
        return {"path": str(p), "schema": db.execute("PRAGMA user_version").fetchone()[0] or 1, "sessions": ids,
                "session": dict(db.execute("SELECT * FROM sessions WHERE id=?", (sid,)).fetchone()),
                "pairs": rows("pairs"), "events": rows("events"), "modes": rows("modes"),
                "snapshots": rows("snapshots"),
                "stats": None if not stats else json.loads(stats[-1]["report"])}
    except sqlite3.DatabaseError as e:
        raise RatingEdgeError(f"{p}: cannot read the session log ({e})") from None
    finally:
        db.close()

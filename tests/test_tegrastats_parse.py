"""tegrastats parsing across modules and JetPack releases, and the energy-per-pair summary."""
import json
import subprocess
import sys

import pytest

from rating_edge.bench.tegrastats import (
    main,
    parse_line,
    parse_lines,
    summarize,
    total_power,
)

# Realistic lines in the formats each release prints (values made up, layout as tegrastats writes it).
NANO_JP4 = ("RAM 1565/3956MB (lfb 139x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
            "CPU [11%@1479,6%@1479,7%@1479,5%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@33C CPU@35.5C "
            "PMIC@100C GPU@33.5C AO@41.5C thermal@34.25C POM_5V_IN 2701/2701 POM_5V_GPU 0/0 POM_5V_CPU 497/497")
XAVIER_NX_JP4 = ("RAM 2209/7772MB (lfb 1015x4MB) SWAP 0/3886MB (cached 0MB) "
                 "CPU [10%@1190,5%@1190,6%@1190,4%@1190,off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@37C GPU@37.5C "
                 "PMIC@100C AUX@37C CPU@38.5C thermal@37.75C VDD_IN 3753/3753 VDD_CPU_GPU_CV 536/536 VDD_SOC 1221/1221")
AGX_XAVIER_JP4 = ("RAM 3302/31918MB (lfb 6546x4MB) SWAP 0/15959MB (cached 0MB) "
                  "CPU [2%@1190,1%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 "
                  "APE 150 MTS fg 0% bg 0% AO@30C GPU@30.5C Tdiode@33.5C PMIC@100C AUX@29.5C CPU@31C "
                  "thermal@30.6C Tboard@31C GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 SYS5V 1416/1416")
AGX_ORIN_JP5 = ("04-19-2023 15:36:19 RAM 2403/30536MB (lfb 6364x4MB) SWAP 0/15268MB (cached 0MB) "
                "CPU [0%@729,0%@729,1%@729,0%@729,0%@729,0%@729,2%@729,0%@729] EMC_FREQ 0%@2133 "
                "GR3D_FREQ 0%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@46.125C SOC2@42.718C SOC0@43.531C "
                "CV1@-256C GPU@-256C tj@46.125C SOC1@42.843C CV2@-256C VDD_GPU_SOC 1593mW/1593mW "
                "VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 2714mW/2714mW NC 0mW/0mW VDDQ_VDD2_1V8AO 503mW/503mW NC 0mW/0mW")
ORIN_NANO_JP6 = ("11-29-2026 02:50:00 RAM 2018/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
                 "CPU [2%@729,1%@729,0%@729,0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 87%@[611] NVENC off "
                 "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@47.5C soc2@46.25C soc0@46.156C "
                 "gpu@51.406C tj@51.5C soc1@46.5C VDD_IN 7717mW/5012mW VDD_CPU_GPU_CV 3514mW/1800mW "
                 "VDD_SOC 1430mW/1400mW")
ORIN_NX_JP6 = ("11-29-2026 02:50:01 RAM 3120/15656MB (lfb 1x4MB) SWAP 0/7828MB (cached 0MB) "
               "CPU [35%@1984,12%@1984,9%@1984,8%@1984,20%@1984,3%@1984,4%@1984,2%@1984] EMC_FREQ 41%@3199 "
               "GR3D_FREQ 99%@[918,918] NVDLA0_FREQ @1612 NVDLA1_FREQ @1612 VIC_FREQ 115 APE 174 "
               "cpu@55.062C soc2@52.437C soc0@53.125C gpu@58.343C tj@58.343C soc1@52.562C "
               "VDD_IN 14890mW/14102mW VDD_CPU_GPU_CV 7011mW/6542mW VDD_SOC 3107mW/3050mW")


def test_nano_jp4():
    s = parse_line(NANO_JP4)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_total_mb) == (1565, 3956, 1978)
    assert s.cpu_load == [11, 6, 7, 5] and s.cpu_freq_mhz == [1479] * 4
    assert (s.gpu_load, s.gpu_freq_mhz, s.emc_load, s.emc_freq_mhz) == (0, 921, 3, 1600)
    assert s.rails_mw == {"POM_5V_IN": 2701, "POM_5V_GPU": 0, "POM_5V_CPU": 497}
    assert s.total_power_mw == 2701
    assert s.temps_c["CPU"] == 35.5 and "PMIC" not in s.temps_c  # PMIC@100C is a fixed placeholder
    assert s.time is None


def test_xavier_nx_jp4_off_cores_and_no_frequencies():
    s = parse_line(XAVIER_NX_JP4)
    assert s.cpu_load == [10, 5, 6, 4, None, None]
    assert s.gpu_load == 0 and s.gpu_freq_mhz is None and s.emc_freq_mhz is None
    assert s.rails_mw == {"VDD_IN": 3753, "VDD_CPU_GPU_CV": 536, "VDD_SOC": 1221}
    assert total_power(s.rails_mw) == (3753.0, "VDD_IN")


def test_agx_xavier_rails_named_like_temperatures_are_kept_apart():
    s = parse_line(AGX_XAVIER_JP4)
    assert s.temps_c["GPU"] == 30.5 and s.temps_c["CPU"] == 31.0 and s.temps_c["Tboard"] == 31.0
    assert s.rails_mw == {"GPU": 0, "CPU": 311, "SOC": 1243, "CV": 0, "VDDRQ": 155, "SYS5V": 1416}
    p, src = total_power(s.rails_mw)
    assert p == 311 + 1243 + 155 + 1416 and src.startswith("sum(")


def test_agx_orin_jp5_mw_units_absent_sensors_nc_rails_and_gpc_list():
    s = parse_line(AGX_ORIN_JP5)
    assert s.time == "2023-04-19T15:36:19"
    assert len(s.cpu_load) == 8 and s.cpu_load[6] == 2
    assert s.gpu_freq_mhz == 305
    assert "CV0" not in s.temps_c and "GPU" not in s.temps_c  # -256C = sensor absent
    assert s.temps_c["tj"] == 46.125
    assert "NC" not in s.rails_mw
    assert s.rails_mw == {"VDD_GPU_SOC": 1593, "VDD_CPU_CV": 398, "VIN_SYS_5V0": 2714, "VDDQ_VDD2_1V8AO": 503}
    assert s.total_power_mw == 1593 + 398 + 2714 + 503


def test_orin_jp6_current_not_average():
    s = parse_line(ORIN_NANO_JP6)
    assert s.rails_mw["VDD_IN"] == 7717 and s.rails_avg_mw["VDD_IN"] == 5012
    assert s.gpu_load == 87 and s.gpu_freq_mhz == 611
    assert s.cpu_load == [2, 1, 0, 0, None, None]
    n = parse_line(ORIN_NX_JP6)
    assert n.gpu_freq_mhz == 918 and n.emc_freq_mhz == 3199 and n.total_power_mw == 14890
    assert n.temps_c["gpu"] == 58.343


def test_noise_lines_are_skipped():
    assert parse_line("") is None
    assert parse_line("bash: tegrastats: command not found") is None
    assert len(parse_lines([ORIN_NANO_JP6, "", "garbage", ORIN_NANO_JP6])) == 2


def _log(tmp_path, watts, interval_s=1):
    lines = []
    for i, w in enumerate(watts):
        line = ORIN_NANO_JP6.replace("VDD_IN 7717mW/5012mW", f"VDD_IN {int(w * 1000)}mW/5000mW")
        lines.append(line.replace("02:50:00", f"02:50:{i * interval_s:02d}"))
    p = tmp_path / "tegrastats.log"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_energy_per_pair_from_given_duration(tmp_path):
    from rating_edge.bench.tegrastats import parse_log
    res = summarize(parse_log(_log(tmp_path, [6.0, 8.0, 10.0])), pairs=300, seconds=10.0)
    assert res["avg_power_w"] == pytest.approx(8.0)
    assert res["peak_power_w"] == pytest.approx(10.0)
    assert res["energy_j"] == pytest.approx(80.0)
    assert res["energy_per_pair_j"] == pytest.approx(80.0 / 300)
    assert res["power_source"] == "VDD_IN"
    assert res["rails_avg_w"]["VDD_SOC"] == pytest.approx(1.43)


def test_duration_from_timestamps(tmp_path):
    from rating_edge.bench.tegrastats import parse_log
    res = summarize(parse_log(_log(tmp_path, [5.0] * 4, interval_s=2)), pairs=40, interval_ms=2000)
    assert res["seconds"] == pytest.approx(8.0)  # 0..6 s plus one interval
    assert res["energy_per_pair_j"] == pytest.approx(5.0 * 8.0 / 40)


def test_empty_log_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no tegrastats samples"):
        summarize([])
    p = tmp_path / "empty.log"
    p.write_text("\n")
    assert main(["summarize", str(p)]) == 2


def test_module_entry_point(tmp_path):
    log = _log(tmp_path, [4.0, 6.0])
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, "-m", "rating_edge.bench.tegrastats", "summarize", str(log),
                        "--pairs", "50", "--seconds", "5", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "average power   5.00 W" in r.stdout and "per scored pair 500.0 mJ" in r.stdout
    assert json.loads(out.read_text())["energy_per_pair_j"] == pytest.approx(0.5)

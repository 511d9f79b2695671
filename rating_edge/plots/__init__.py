"""Pictures of what the toolkit measures: the paper's evaluation figures, FP32-vs-INT8 agreement,
benchmark latency distributions and the session report page.

matplotlib (the `plots` extra) is imported only when a picture is drawn, with the Agg backend, so the
runtime and every command without `--plot(s)` neither need it nor pay for importing it.
"""

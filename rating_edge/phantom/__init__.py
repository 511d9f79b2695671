"""Synthetic finger-joint ultrasound with known grades and scanner-screen video (numpy + OpenCV).

- `joint`: one GS + Doppler pair of a joint section with exact EOSS grades, ROI and masks (`make_pair`).
- `dataset`: a labelled dataset in the layout real users bring (`write_dataset`).
- `video`: a vendor-like scanner screen with per-frame truth, as a file (`write_video`) or a paced
  live source (`open_live("phantom://?...")`).
- `commands`: `rating-edge phantom dataset|video`; `examples`: the README pictures.
"""

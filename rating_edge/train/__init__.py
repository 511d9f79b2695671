"""Paper-faithful training of the RATING ensemble (torch).

config   hyper-parameters per preset (paper / tiny: same recipe, other numbers)
folds    the 5-fold split by patient
augment  class-balanced resampling, random crop, brightness/contrast jitter (numpy + OpenCV)
loop     the shared optimisation loop (Adam, step decay, cross-entropy)
jigsaw   optional self-supervised pre-training of the backbones
recipe   the whole ensemble, network by network, resumable (`train_ensemble`)
commands CLI: `rating-edge train`, `rating-edge evaluate`
"""

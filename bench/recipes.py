"""The training recipes the benchmarks compare, by name: settings over the current defaults.

``baseline`` pins the recipe before issue 9 (its augmentation, a constant
learning rate, no batch-norm refresh, Youden's threshold), so it stays
comparable after the defaults move. Ensemble recipes train k fold models
(``pneumokit cv --ensemble``); the others one model (``pneumokit train``).
"""

BASELINE_AUGMENT = "crop,rotate,brightness,contrast"  # the defaults before issue 9
STRONG_AUGMENT = ("crop:scale=0.35-1,rotate:degrees=10,"
                  "brightness:factor=0.3,contrast:factor=0.3,gamma:factor=0.3")
ACQUISITION_AUGMENT = ("crop:scale=0.35-1,rotate:degrees=10,jpeg:quality=30-95,blur:sigma=1,"
                       "noise:std=0.03,brightness:factor=0.3,contrast:factor=0.3,gamma:factor=0.3")
MODERATE_AUGMENT = ("crop:scale=0.6-1,rotate:degrees=10,jpeg:quality=30-95,blur:sigma=1,"
                    "noise:std=0.03,brightness:factor=0.2,contrast:factor=0.2,gamma:factor=0.2")
# name -> (settings over TrainConfig's defaults, folds of an ensemble or 0 for one model)
RECIPES = {
    "default": ({}, 0),  # since issue 9 the same as "moderate" with the calibrated 0.5 rule
    "baseline": ({"augment": BASELINE_AUGMENT, "lr_schedule": "constant", "bn_refresh": False,
                  "threshold_rule": "youden"}, 0),
    "baseline_schedule": ({"augment": BASELINE_AUGMENT, "threshold_rule": "youden"}, 0),
    "strong": ({"augment": STRONG_AUGMENT, "threshold_rule": "youden"}, 0),
    "acquisition": ({"augment": ACQUISITION_AUGMENT, "threshold_rule": "youden"}, 0),
    "acquisition_40_epochs": ({"augment": ACQUISITION_AUGMENT, "threshold_rule": "youden", "epochs": 40,
                               "patience": 10}, 0),
    "moderate": ({"augment": MODERATE_AUGMENT, "threshold_rule": "youden"}, 0),
    "moderate_40_epochs": ({"augment": MODERATE_AUGMENT, "threshold_rule": "youden", "epochs": 40,
                            "patience": 10}, 0),
    "acquisition_224": ({"augment": ACQUISITION_AUGMENT, "threshold_rule": "youden",
                         "image_size": 224}, 0),
    "default_ensemble": ({}, 5),
    "default_224": ({"image_size": 224}, 0),  # issue 25: a candidate for the accurate recipe
    "default_members5": ({"members": 5}, 0),  # issue 25: a deep ensemble of 5 default networks
    "default_members3": ({"members": 3}, 0),  # issue 25: the accurate recipe
    "acquisition_ensemble": ({"augment": ACQUISITION_AUGMENT, "threshold_rule": "youden"}, 5),
}

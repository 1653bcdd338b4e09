"""tqdm progress for training: one bar per fit, epochs as steps, loss and AUC shown."""

from __future__ import annotations

import sys

import keras
from tqdm.auto import tqdm


def progress_enabled(quiet: bool) -> bool:
    """Bars only for a person at a terminal: not with --quiet, not when output is piped."""
    return not quiet and sys.stderr.isatty()


class EpochBar(keras.callbacks.Callback):
    """A tqdm bar advancing once per epoch, with loss and validation AUC in its postfix."""

    def __init__(self, epochs: int, desc: str = "epochs", enabled: bool = True, position: int = 0):
        super().__init__()
        self.epochs, self.desc, self.enabled, self.position = epochs, desc, enabled, position
        self.bar = None

    def on_train_begin(self, logs=None):
        if self.enabled:
            self.bar = tqdm(total=self.epochs, desc=self.desc, unit="epoch", leave=False,
                            position=self.position, file=sys.stderr)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            logs = logs or {}
            shown = {k: f"{logs[k]:.4f}" for k in ("loss", "val_loss", "val_auc") if k in logs}
            self.bar.set_postfix(shown)
            self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

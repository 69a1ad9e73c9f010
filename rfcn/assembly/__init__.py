"""Turn a composed config into objects: datasets, the model (fresh, fine-tuned or restored),
the solver, transforms, evaluators, the trainer and its hooks, and the data-aware sizing that
resolves `auto` keys before any of them is built.

The one seam between configuration (rfcn.config) and running (rfcn.engine, rfcn.evaluation,
rfcn.inference): only the entry points (rfcn.entrypoints) and scripts import this package, and
nothing it builds keeps a config.

How the model is decided: a fresh run resolves its `RFCNSpec` from the model
config once (`config_spec`); every checkpoint stores it. Resume rebuilds the checkpoint's spec
exactly (a config that now says otherwise is warned about, not obeyed); fine-tuning keeps the
checkpoint's architecture (trunk depth and norm, trainable stages, k, head, anchors) with the
new data's class count and the config's settings (sizes, thresholds, sampling); eval, infer and
export rebuild the checkpoint's spec, with the test-time post-processing overrides of
`test.*`. Checkpoints older than the spec (format 1) are rebuilt from the config they store.

Modules: `data` (datasets, evaluators, transforms, the training loader), `model` (specs and
models), `sizing` (`model.*=auto`), `training` (solver, hooks, trainer).
"""

from rfcn.assembly.data import (
    TrainingData,
    build_datasets,
    build_eval_dataset,
    build_evaluator,
    build_train_transforms,
    train_loader_factory,
    training_data,
)
from rfcn.assembly.model import (
    MODEL_BUILDERS,
    build_model,
    checkpoint_spec,
    config_spec,
    finetune_model,
    restore_model,
    resume_model,
    test_time_model,
)
from rfcn.assembly.sizing import apply_auto_sizing, resolve_without_data
from rfcn.assembly.training import (
    COCO_METRICS,
    VOC_METRICS,
    build_hooks,
    build_solver,
    build_trainer,
    open_tensorboard,
    scaled_lr,
    trainer_settings,
)

__all__ = [
    "COCO_METRICS",
    "MODEL_BUILDERS",
    "TrainingData",
    "VOC_METRICS",
    "apply_auto_sizing",
    "build_datasets",
    "build_eval_dataset",
    "build_evaluator",
    "build_hooks",
    "build_model",
    "build_solver",
    "build_train_transforms",
    "build_trainer",
    "checkpoint_spec",
    "config_spec",
    "finetune_model",
    "open_tensorboard",
    "resolve_without_data",
    "restore_model",
    "resume_model",
    "scaled_lr",
    "test_time_model",
    "train_loader_factory",
    "trainer_settings",
    "training_data",
]

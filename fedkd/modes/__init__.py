"""Single-node distillation modes, each a config dataclass plus ``run_<mode>(config, out_dir)``.

- :mod:`fedkd.modes.compression` -- teacher -> small student through a transfer set: alone vs
  KD at several temperatures vs KD + hint, in the Hinton and the low-label setting.
- :mod:`fedkd.modes.probes` -- linear probes on every hidden layer of teacher and students.
- :mod:`fedkd.modes.continual` -- Split-MNIST, task- and class-incremental: fine-tuning vs LwF
  vs replay vs LwF + replay.
- :mod:`fedkd.modes.attention` -- dynamic attention teacher vs fixed-context student.
- :mod:`fedkd.modes.uncertainty` -- calibration, aleatoric and epistemic uncertainty.
- :mod:`fedkd.modes.attribution` -- saliency alignment of teacher and students vs temperature.
- :mod:`fedkd.modes.rkd` -- multi-task relational KD.

Every model is trained by the one recipe of :mod:`fedkd.distill.recipe`; what the modes share
sits beside them: :mod:`~fedkd.modes.students` (transfer sets, validation slices, the teacher and
student methods as loss terms), :mod:`~fedkd.modes.stats` (mean, sample std, t-interval),
:mod:`~fedkd.modes.latency` (single-thread interleaved timing with an identical-copy control,
FLOPs), :mod:`~fedkd.modes.sequence_models` and :mod:`~fedkd.modes.common` (results file,
seeding, plots, tables, argparse from a config). The scripts ``experiments/<mode>.py``
(``python -m experiments.<mode>`` or ``fedkd <mode>``) map flags onto each config. Nothing is
imported here, so loading one mode never pays for another.
"""

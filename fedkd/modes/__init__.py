"""Single-node distillation modes, each a config dataclass plus ``run_<mode>(config, out_dir)``.

- :mod:`fedkd.modes.compression` -- teacher -> small student: alone vs KD vs KD + hint.
- :mod:`fedkd.modes.probes` -- linear probes on every hidden layer of teacher and students.
- :mod:`fedkd.modes.continual` -- task A then B: fine-tuning vs LwF vs LwF + replay.
- :mod:`fedkd.modes.attention` -- dynamic attention teacher vs fixed-context student.
- :mod:`fedkd.modes.uncertainty` -- calibration, aleatoric and epistemic uncertainty.
- :mod:`fedkd.modes.attribution` -- saliency alignment of teacher and students vs temperature.
- :mod:`fedkd.modes.rkd` -- multi-task relational KD.

:mod:`fedkd.modes.common` holds what they share (results file, seeding, plots, latency, tables,
argparse from a config). The scripts ``experiments/<mode>.py`` (``python -m experiments.<mode>``
or ``fedkd <mode>``) map flags onto each config. Nothing is imported here, so loading one mode
never pays for another.
"""

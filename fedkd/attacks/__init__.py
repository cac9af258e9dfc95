"""Privacy and attack studies (design brief §3.3): what a curious or malicious server, or a
malicious client, can learn or break in federated distillation.

Each study is a module with a ``run(StudyOptions) -> StudyResult`` entry point; the thin
scripts in ``experiments/attacks/`` parse arguments and write the results folder. Attackers
wrap the real round (:mod:`fedkd.attacks.federation`): they never copy it.
"""

from fedkd.attacks.common import (
    StudyOptions,
    StudyResult,
    markdown_table,
    read_study,
    write_study,
)

__all__ = ["StudyOptions", "StudyResult", "markdown_table", "read_study", "write_study"]

"""`harness launch`: submit N `harness worker` jobs that join one shared study, through submitit.

The launcher is submitit (pure Python; cloudpickle and typing_extensions), an optional extra
(`pip install 'canary-sweep-harness[launch]'`). NeMo-Run was evaluated and cannot serve: nemo-run
0.11.1 does not resolve next to nemo_toolkit 3.0 (torchx 0.7 pins urllib3<1.27, NeMo's aistore needs
urllib3>=2.8; virtualenv's packaging>=26.3 against lightning's packaging<25), and installed alone it
fails to import (leptonai 0.47 lacks `leptonai.api.v1`).

Callers import from here; the private modules are one concern each: `_submit` (the checks, then local or
Slurm), `_jobs` (what every job runs: `python -m harness worker SPEC --storage URL --tracking-uri URI` in
the job's own Python process), `_local` (jobs on this machine, awaited), `_slurm` (jobs submitted with
`sbatch`; the study and MLflow show the progress), and for Slurm `_partition` (a request the partition
cannot satisfy, refused), `_container` (what a container job must see) and `_record` (the study opened
before submitting, the jobs recorded on it for `harness status`).
"""

from harness.launch._submit import INSTALL_HINT, launch

__all__ = ["INSTALL_HINT", "launch"]

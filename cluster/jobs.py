"""Jobs of a `snakemake -n -p` printout: rule, outputs, wildcards, resources and the shell command.

Snakemake 9 prints each job as a `rule <name>:` header (indented inside a group job) followed by
indented `key: value` lines, then, with -p, one `Shell command: ...` line. The `Job stats:` table
counts the jobs per rule.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from core.errors import UserError

_HEADER = re.compile(r"^\s*(?:local)?rule (\w+):$")
_FIELD = re.compile(r"^\s+(\w+): (.*)$")
_SHELL = "Shell command: "


@dataclass
class Job:
    rule: str
    fields: dict[str, str] = field(default_factory=dict)
    shell: str | None = None

    @property
    def output(self) -> str:
        """The job's outputs as printed: unique per job, so it identifies the job across dry runs."""
        return self.fields.get("output", "")

    @property
    def resources(self) -> dict[str, str]:
        return dict(re.findall(r"(\w+)=([^,]*)", self.fields.get("resources", "")))

    @property
    def wildcards(self) -> dict[str, str]:
        return dict(re.findall(r"(\w+)=([^,]*)", self.fields.get("wildcards", "")))

    def resource(self, name: str, default: int) -> int:
        value = self.resources.get(name, "").strip()
        return int(value) if value.isdigit() else default

    @property
    def gpus(self) -> int:
        """All GPUs of the job (common.smk resources_for: `gpu` is the total over its `nodes`)."""
        return self.resource("gpu", 0)

    @property
    def runtime_minutes(self) -> int:
        return self.resource("runtime", 0)

    @property
    def cores(self) -> int:
        """CPU cores over all nodes (cpus_per_task is per node: one task per node)."""
        return self.resource("cpus_per_task", 1) * self.resource("nodes", 1)

    @property
    def argv(self) -> list[str]:
        """The shell command's words (a job printed without -p, or a `run:` rule, has none)."""
        return shlex.split(self.shell or "")

    def option(self, name: str) -> str:
        """The value after `name` in the shell command."""
        argv = self.argv
        if name not in argv[:-1]:
            raise UserError(f"{self.output}: the shell command of rule {self.rule} has no {name} value; the GPU plan "
                            f"reads it (cluster/estimate.py). Update the estimator to the rule's new command line.")
        return argv[argv.index(name) + 1]


def parse_jobs(text: str) -> list[Job]:
    """Every job of a dry-run printout, in printed order."""
    jobs: list[Job] = []
    current: Job | None = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = Job(header.group(1))
            jobs.append(current)
        elif current is not None and line.startswith(_SHELL):
            current.shell = line[len(_SHELL):]
            current = None  # the shell command ends a job's block
        elif current is not None and (match := _FIELD.match(line)):
            current.fields[match.group(1)] = match.group(2)
    return jobs


def job_stats(text: str) -> dict[str, int]:
    """The `Job stats:` table (the first one printed): jobs per rule, without the total."""
    lines = text.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts: dict[str, int] = {}
    for line in lines[lines.index("Job stats:") + 3:]:  # past the header and its dashes
        match = re.match(r"^(\w+)\s+(\d+)$", line)
        if not match or match.group(1) == "total":
            break
        counts[match.group(1)] = int(match.group(2))
    return counts

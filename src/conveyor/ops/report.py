"""`conveyor.publish_report`: show a report file written after a run on that run's Prefect page."""

from __future__ import annotations

import logging
from pathlib import Path

from conveyor.engine.results import RunResult
from conveyor.engine.settings import Settings

log = logging.getLogger("conveyor.report")


def publish_report(
    path: str | Path,
    run: RunResult,
    *,
    title: str,
    markdown: str = "",
    settings: Settings | None = None,
) -> bool:
    """Publish a markdown artifact linking `path` on `run`'s Prefect flow run, if it had one.

    The artifact holds `title`, the file's location (a `file://` link: browsers open it from the
    address bar, not always from a click on an http page) and `markdown` (a summary, say). A run
    of the local engine has no flow run: nothing is published and the result is False.
    """
    if run.flow_run_id is None:
        return False
    from conveyor.backends.prefect_artifacts import publish_markdown

    location = Path(path).resolve()
    text = f"# {title}\n\n[{location.name}]({location.as_uri()}) — `{location}`\n\n{markdown}"
    publish_markdown(
        settings or Settings.load(),
        run.flow_run_id,
        key=f"{run.pipeline}-report",
        markdown=text.rstrip() + "\n",
        description=f"{title}: {location}",
    )
    log.info("report %s published to flow run %s", location, run.flow_run_id)
    return True

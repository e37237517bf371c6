"""Artifacts published after a run ended: a report attached to a finished Prefect flow run."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from conveyor.backends.prefect_flow import api_settings, artifact_key, configure


def publish_markdown(
    settings: Any, flow_run_id: str, key: str, markdown: str, description: str
) -> str:
    """Attach a markdown artifact to flow run `flow_run_id`; returns the artifact's id.

    Prefect's `create_markdown_artifact` attaches to the run of its calling context; a report is
    written after the flow run ended, so the artifact names the flow run itself.
    """
    configure(settings)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    async def create() -> str:
        async with get_client() as client:
            artifact = await client.create_artifact(
                ArtifactCreate(
                    key=artifact_key(key),
                    type="markdown",
                    data=markdown,
                    description=description,
                    flow_run_id=UUID(flow_run_id),
                )
            )
            return str(artifact.id)

    with api_settings(settings):
        return asyncio.run(create())

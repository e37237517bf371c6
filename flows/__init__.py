"""The project's pipelines; `conveyor run NAME` finds them here."""

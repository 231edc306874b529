"""The native part of afterimage_rs (internal; use the classes of the package)."""

from typing import Any, List, Optional

__version__: str

class StopHandle:
    """Stops a run: dialogs in flight finish, no new one starts."""

    def __init__(self) -> None: ...
    def stop(self) -> None:
        """Asks the run to stop."""

def run(
    generator: str,
    run: str,
    event_loop: Any,
    instructions: Optional[Any] = None,
    modifier: Optional[Any] = None,
    stoppers: List[Optional[Any]] = ...,
    stop: Optional[StopHandle] = None,
) -> str:
    """Runs one generation from the JSON settings and the Python callbacks, blocking
    with the GIL released; async callbacks run on event_loop. The run report as JSON."""

def cli_main(argv: List[str]) -> int:
    """Runs the afterimage CLI with argv (the program first); its exit code."""

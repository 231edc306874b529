"""The native part of afterimage_rs (internal; use the classes of the package)."""

from typing import Any, Awaitable, List, Optional

__version__: str

def generate(
    generator: str,
    run: str,
    instructions: Optional[Any] = None,
    modifier: Optional[Any] = None,
    stoppers: List[Optional[Any]] = ...,
) -> Awaitable[str]:
    """Runs one generation from the JSON settings and the Python callbacks; the
    awaitable's result is the run report as JSON."""

def cli_main(argv: List[str]) -> int:
    """Runs the afterimage CLI with argv (the program first); its exit code."""

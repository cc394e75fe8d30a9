"""How an assignment describes its functions to the engine: names, parameters, returns, caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

CaseValue = np.ndarray | float | int
Case = dict[str, CaseValue]
CaseGenerator = Callable[[np.random.Generator], list[Case]]


@dataclass(frozen=True)
class CacheFrom:
    """A parameter that receives the cache a forward pass returned.

    When the student's forward ran without error the sandbox passes its own cache; otherwise it
    passes the documented cache, built from the case's inputs (a tuple of names, or one name for a
    bare value), so a correct backward earns its points even when the forward is broken.
    """

    param: str
    forward: str
    output: str
    documented: tuple[str, ...] | str

    def describe(self) -> str:
        """The documented cache as the handout writes it: "(x, w, b)", or "x"."""
        return self.documented if isinstance(self.documented, str) else f"({', '.join(self.documented)})"


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[str, ...]
    returns: tuple[str, ...]
    bare: bool = False  # returns one value rather than a tuple
    keep: tuple[str, ...] = ()  # outputs that never leave the sandbox (caches)
    cache: CacheFrom | None = None

    @property
    def sent(self) -> list[int]:
        return [i for i, name in enumerate(self.returns) if name not in self.keep]

    def call_args(self, case: Case) -> list[Any]:
        """The reference's arguments for a case (the documented cache stands in for a cache)."""
        args: list[Any] = []
        for param in self.params:
            if self.cache is not None and param == self.cache.param:
                documented = self.cache.documented
                if isinstance(documented, str):
                    args.append(np.array(case[documented], copy=True))
                else:
                    args.append(tuple(np.array(case[name], copy=True) for name in documented))
            else:
                value = case[param]
                args.append(value.copy() if isinstance(value, np.ndarray) else value)
        return args

    def named_returns(self, value: Any) -> dict[str, Any]:
        if self.bare:
            return {self.returns[0]: value}
        return dict(zip(self.returns, value, strict=True))

"""A small domain shared by the sourcing tests and their worker processes."""

from __future__ import annotations

import dataclasses

import pydantic

from inmotion.sourcing import Aggregate, applies


@dataclasses.dataclass
class Opened:
    owner: str


@dataclasses.dataclass
class Deposited:
    amount: int
    by: str = ""


class Withdrawn(pydantic.BaseModel):
    amount: int


@dataclasses.dataclass
class Entry:
    kind: str
    amount: int


class Account(Aggregate):
    owner: str = ""
    balance: int = 0
    entries: list[Entry]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.entries = []

    def open(self, owner: str) -> None:
        self.emit(Opened(owner))

    def deposit(self, amount: int, by: str = "") -> None:
        if amount <= 0:
            raise ValueError("deposit a positive amount")
        self.emit(Deposited(amount, by))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.emit(Withdrawn(amount=amount))

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.entries.append(Entry("deposit", event.amount))

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount
        self.entries.append(Entry("withdrawal", event.amount))

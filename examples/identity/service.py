"""A user-profile service on event sourcing: commands arrive as CloudEvents on
`identity.commands` (from anywhere: here, over HTTP through the gateway), each handled by loading
the user's aggregate from the event store, deciding, and saving its new events. The outcome of
every command goes to `identity.results` (keyed by the command's id), and the profiles of active
users to the compacted topic `identity.active-users` (keyed by user: a tombstone when one is
deactivated), a read model that the gateway serves as a table."""

from __future__ import annotations

import dataclasses

from inmotion import App, Context
from inmotion.errors import ConcurrencyError
from inmotion.sourcing import Aggregate, AggregateNotFound, EventStore, Repository, applies

COMMANDS = "identity.commands"
RESULTS = "identity.results"
ACTIVE_USERS = "identity.active-users"


@dataclasses.dataclass
class Registered:
    name: str
    email: str


@dataclasses.dataclass
class EmailChanged:
    email: str


@dataclasses.dataclass
class Deactivated:
    reason: str


class Refused(Exception):
    """A command the user's state does not allow."""


class User(Aggregate):
    name: str = ""
    email: str = ""
    active: bool = False

    def register(self, name: str, email: str) -> None:
        if self.version:
            raise Refused(f"user {self.id} is registered already")
        self.emit(Registered(name, _checked(email)))

    def change_email(self, email: str) -> None:
        if not self.active:
            raise Refused(f"user {self.id} is deactivated")
        if _checked(email) != self.email:
            self.emit(EmailChanged(email))

    def deactivate(self, reason: str) -> None:
        if not self.active:
            raise Refused(f"user {self.id} is deactivated already")
        self.emit(Deactivated(reason))

    @applies(Registered)
    def _registered(self, event: Registered) -> None:
        self.name, self.email, self.active = event.name, event.email, True

    @applies(EmailChanged)
    def _email_changed(self, event: EmailChanged) -> None:
        self.email = event.email

    @applies(Deactivated)
    def _deactivated(self, event: Deactivated) -> None:
        self.active = False


def _checked(email: str) -> str:
    if "@" not in email.strip("@"):
        raise Refused(f"{email!r} is not an e-mail address")
    return email


def service(broker: str) -> App:
    app = App("identity", broker)
    users = Repository(EventStore(broker), User)

    @app.subscribe(COMMANDS, group="identity", idempotent=True)
    async def handle(command: dict[str, str], ctx: Context) -> None:
        user_id = command.get("user", "")
        try:
            user = _load(users, user_id, ctx.event.type)
            if ctx.event.type == "identity.register":
                user.register(command.get("name", ""), command.get("email", ""))
            elif ctx.event.type == "identity.change_email":
                user.change_email(command.get("email", ""))
            elif ctx.event.type == "identity.deactivate":
                user.deactivate(command.get("reason", ""))
            else:
                raise Refused(f"unknown command {ctx.event.type}")
            users.save(user)
        except (Refused, AggregateNotFound) as refused:
            await ctx.publish(RESULTS, {"command": ctx.event.id, "ok": False, "error": str(refused)}, key=ctx.event.id)
            return
        except ConcurrencyError:
            raise  # another writer saved first: retried, loading the user again
        profile = {"user": user.id, "name": user.name, "email": user.email} if user.active else None
        await ctx.publish(ACTIVE_USERS, profile, key=user.id, type="identity.profile")
        await ctx.publish(RESULTS, {"command": ctx.event.id, "ok": True, "version": user.version}, key=ctx.event.id)

    return app


def _load(users: Repository[User], user_id: str, command: str) -> User:
    if not user_id:
        raise Refused("the command names no user")
    if command == "identity.register":
        try:
            return users.get(user_id)
        except AggregateNotFound:
            return User(user_id)
    try:
        return users.get(user_id)
    except AggregateNotFound:
        raise Refused(f"no user {user_id}") from None

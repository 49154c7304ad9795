"""The one template of LabLink's nats-server configurations.

Two files come out of it, with the same users and permissions (``lablink.bus.permissions``):

- the private server of `lablink serve`: ``data/nats/nats-server.conf`` (loopback, JetStream
  under ``data/nats``) including ``data/nats/auth.conf``, the users with their generated
  passwords (``lablink.bus.credentials``), re-rendered when an agent's user is added;
- ``deploy/nats-server.conf``, a 3-node cluster whose passwords come from the environment:
  ``lablink nats config --agents deploy/lab.toml > deploy/nats-server.conf`` writes it, and a
  test renders it again and compares.

Both ask JetStream to acknowledge a message only once it is on disk (``sync_interval:
always``): Jepsen's 2025 analysis of NATS lost acknowledged writes under the default periodic
fsync.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lablink.bus.permissions import (
    SCHEDULER,
    SUBSCRIBER,
    Permissions,
    Role,
    agent_user,
    permissions_of,
)

AUTH_FILE = "auth.conf"
CONFIG_FILE = "nats-server.conf"
_ENV_SAFE = re.compile(r"[^A-Za-z0-9]")


@dataclass(frozen=True)
class ConfUser:
    """A user as written in a configuration: ``password`` is the text after ``password:``,
    a quoted literal or a ``$VARIABLE`` nats-server reads from its environment."""

    name: str
    role: Role
    password: str
    instruments: tuple[str, ...] = ()

    @property
    def permissions(self) -> Permissions:
        return permissions_of(self.role, self.name, self.instruments)


def literal(text: str) -> str:
    """A quoted string in nats-server's configuration syntax (JSON quoting is accepted)."""
    return json.dumps(text)


def password_variable(user: str) -> str:
    """The environment variable a cluster node reads ``user``'s password from."""
    return "NATS_" + _ENV_SAFE.sub("_", user).upper() + "_PASSWORD"


def _subjects(subjects: Sequence[str], indent: str) -> str:
    if len(subjects) <= 2:
        return "[" + ", ".join(literal(s) for s in subjects) + "]"
    inner = "".join(f"{indent}  {literal(s)}\n" for s in subjects)
    return f"[\n{inner}{indent}]"


def _publish(perms: Permissions, indent: str) -> str:
    if not perms.publish_deny:
        return _subjects(perms.publish, indent)
    return (
        f"{{\n{indent}  allow: {_subjects(perms.publish, indent + '  ')}\n"
        f"{indent}  deny: {_subjects(perms.publish_deny, indent + '  ')}\n{indent}}}"
    )


def _user(user: ConfUser, indent: str, comment: str = "") -> str:
    perms = user.permissions
    pad = indent + "  "
    lines = [f"{indent}# {line}\n" for line in comment.splitlines()] if comment else []
    lines += [
        f"{indent}{{\n",
        f"{pad}user: {literal(user.name)}\n",
        f"{pad}password: {user.password}\n",
        f"{pad}permissions: {{\n",
        f"{pad}  publish: {_publish(perms, pad + '  ')}\n",
        f"{pad}  subscribe: {_subjects(perms.subscribe, pad + '  ')}\n",
    ]
    if perms.allow_responses:
        lines.append(f"{pad}  allow_responses: true\n")
    lines += [f"{pad}}}\n", f"{indent}}}\n"]
    return "".join(lines)


_COMMENTS = {
    "scheduler": "The scheduler (lablink serve / scheduler / relay): owns the streams.",
    "agent": "An equipment agent: only its own instruments' subjects.",
    "subscriber": "Read-only: lablink events tail, lablink alarms watch, dashboards.",
}


def users_block(users: Sequence[ConfUser], indent: str) -> str:
    """Every user with its permissions, in a stable order: scheduler, agents, subscriber."""
    order = {"scheduler": 0, "agent": 1, "subscriber": 2}
    ranked = sorted(users, key=lambda u: (order[u.role], u.name))
    blocks = []
    for user in ranked:
        comment = _COMMENTS[user.role]
        if user.role == "agent":
            comment = f"{comment} Instruments: {', '.join(user.instruments)}."
        blocks.append(_user(user, indent, comment))
    return "".join(blocks)


def embedded_auth(users: Sequence[ConfUser]) -> str:
    """``data/nats/auth.conf``: the private server's users, in the global account (where
    the streams of installations from before authentication already are)."""
    return (
        "# Written by LabLink from credentials.json; edits are overwritten.\n"
        "authorization {\n"
        "  users: [\n"
        f"{users_block(users, '    ')}"
        "  ]\n"
        "}\n"
    )


def embedded_config(store_dir: Path, port: int, *, name: str = "lablink") -> str:
    """``data/nats/nats-server.conf``: loopback only, JetStream under ``store_dir``."""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"server_name: {name}\n"
        "jetstream {\n"
        f"  store_dir: {literal(str(store_dir))}\n"
        "  sync_interval: always\n"
        "}\n"
        f"include {literal(AUTH_FILE)}\n"
    )


@dataclass(frozen=True)
class AgentSpec:
    """An agent of a cluster configuration: its id and the instruments it serves."""

    agent_id: str
    instruments: tuple[str, ...]


def cluster_users(agents: Sequence[AgentSpec]) -> list[ConfUser]:
    users = [
        ConfUser(SCHEDULER, "scheduler", "$" + password_variable(SCHEDULER)),
        ConfUser(SUBSCRIBER, "subscriber", "$" + password_variable(SUBSCRIBER)),
    ]
    for agent in agents:
        name = agent_user(agent.agent_id)
        users.append(ConfUser(name, "agent", "$" + password_variable(name), agent.instruments))
    return users


def cluster_config(agents: Sequence[AgentSpec], *, source: str = "") -> str:
    """``deploy/nats-server.conf``: three nodes, per-node values and passwords from the
    environment. ``source`` names where the agents came from, for the header."""
    users = cluster_users(agents)
    variables = "".join(f"#   {password_variable(u.name):<38}{u.name}'s password\n" for u in users)
    agents_from = f" --agents {source}" if source else ""
    return (
        "# A 3-node NATS JetStream cluster for LabLink.\n"
        "#\n"
        "# Generated: lablink nats config"
        f"{agents_from} > deploy/nats-server.conf\n"
        "# (the private server of `lablink serve` is rendered from the same template, so the\n"
        "# users and their permissions are the same; see docs/nats.md).\n"
        "#\n"
        "# One file for all three nodes: what differs per node comes from the environment.\n"
        "#   NATS_SERVER_NAME      nats-1 | nats-2 | nats-3\n"
        "#   NATS_LISTEN           client address, e.g. 0.0.0.0:4222\n"
        "#   NATS_CLUSTER_LISTEN   route address, e.g. 0.0.0.0:6222\n"
        "#   NATS_ROUTE_1..3       the three route URLs, e.g. nats-route://nats-1:6222\n"
        "#   NATS_STORE_DIR        JetStream storage, e.g. /var/lib/nats\n"
        "# and the users' passwords (long random strings, the same on every node):\n"
        f"{variables}"
        f"#   {'NATS_SYS_PASSWORD':<38}the system account's (monitoring)\n"
        "#\n"
        "# Start each node:   nats-server -c deploy/nats-server.conf\n"
        "# Point LabLink at it (see docs/nats.md):\n"
        "#   LABLINK_NATS_URL=nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222\n"
        "#   LABLINK_NATS_USER=scheduler LABLINK_NATS_PASSWORD=... LABLINK_NATS_REPLICAS=3\n"
        "\n"
        "server_name: $NATS_SERVER_NAME\n"
        "listen: $NATS_LISTEN\n"
        "\n"
        "jetstream {\n"
        "  store_dir: $NATS_STORE_DIR\n"
        "  sync_interval: always\n"
        "}\n"
        "\n"
        "cluster {\n"
        "  name: lablink\n"
        "  listen: $NATS_CLUSTER_LISTEN\n"
        "  routes: [$NATS_ROUTE_1, $NATS_ROUTE_2, $NATS_ROUTE_3]\n"
        "}\n"
        "\n"
        "accounts {\n"
        "  LABLINK {\n"
        "    jetstream: enabled\n"
        "    users: [\n"
        f"{users_block(users, '      ')}"
        "    ]\n"
        "  }\n"
        "  SYS {\n"
        "    users: [{user: sys, password: $NATS_SYS_PASSWORD}]\n"
        "  }\n"
        "}\n"
        "system_account: SYS\n"
    )

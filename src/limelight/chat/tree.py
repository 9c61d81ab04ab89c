"""A session's message tree: append, swipe, edit, delete, branch.

Each message points at its parent; siblings (children of one parent) are alternative
continuations: swipes of a reply or branches after an edit.  The session's `leaf_id` marks
the branch on screen, and `path` walks from that leaf to the root.  Greetings are root
messages, so a card's alternate greetings are swipes of the first message.

Owns the tree operations on rows of `limelight.store`; generating a reply is `service.py`'s.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from limelight.store import ChatSession, Message, utcnow

ROLES = ("user", "assistant")


class ChatError(LookupError):
    """A session or message that does not exist (or not in this session)."""


class ChatInputError(ChatError):
    """A request the tree cannot carry out as asked: an empty message, an unknown role."""


def read_session(db: Session, session_id: str, user_id: str) -> ChatSession:
    chat = db.get(ChatSession, session_id)
    if chat is None or chat.user_id != user_id:  # another user's session does not exist
        raise ChatError(f"no session {session_id!r}")
    return chat


def read_message(db: Session, chat: ChatSession, message_id: str) -> Message:
    message = db.get(Message, message_id)
    if message is None or message.session_id != chat.id:
        raise ChatError(f"no message {message_id!r} in session {chat.id!r}")
    return message


def create_session(
    db: Session, user_id: str, character_id: int, greetings: list[str], profile: str = ""
) -> ChatSession:
    """A new session whose first message is the first greeting; the others are its swipes."""
    chat = ChatSession(user_id=user_id, character_id=character_id, profile=profile)
    db.add(chat)
    db.flush()
    for greeting in greetings:
        add_message(db, chat, "assistant", greeting, parent_id=None)
    if greetings:
        chat.leaf_id = root_messages(db, chat)[0].id
    return chat


def add_message(
    db: Session, chat: ChatSession, role: str, content: str, parent_id: str | None
) -> Message:
    """Append under `parent_id` (None: a new root) and make it the leaf on screen."""
    if role not in ROLES:
        raise ChatInputError(f"role must be one of {ROLES}, not {role!r}")
    if parent_id is not None:
        read_message(db, chat, parent_id)
    message = Message(session_id=chat.id, parent_id=parent_id, role=role, content=content)
    db.add(message)
    db.flush()
    chat.leaf_id = message.id
    chat.updated_at = utcnow()
    return message


def path(db: Session, chat: ChatSession, leaf_id: str | None = None) -> list[Message]:
    """The messages from the root down to `leaf_id` (default: the session's leaf)."""
    return [message for message, _, _ in path_with_swipes(db, chat, leaf_id)]


def path_with_swipes(
    db: Session, chat: ChatSession, leaf_id: str | None = None
) -> list[tuple[Message, int, int]]:
    """`path`, each message with its place among its siblings and their number: one query
    for the whole session, however long the branch."""
    query = select(Message).where(Message.session_id == chat.id)
    rows = list(db.scalars(query.order_by(Message.created_at, Message.id)))
    by_id = {m.id: m for m in rows}
    groups: dict[str | None, list[str]] = {}
    for message in rows:  # oldest first, as `children` orders them
        groups.setdefault(message.parent_id, []).append(message.id)
    branch: list[tuple[Message, int, int]] = []
    node = by_id.get(leaf_id or chat.leaf_id or "")
    while node is not None:
        group = groups[node.parent_id]
        branch.append((node, group.index(node.id), len(group)))
        node = by_id.get(node.parent_id or "")
    return branch[::-1]


def children(db: Session, chat: ChatSession, parent_id: str | None) -> list[Message]:
    """Siblings under one parent, oldest first (None: the roots, i.e. the greetings)."""
    under = Message.parent_id.is_(None) if parent_id is None else Message.parent_id == parent_id
    query = select(Message).where(Message.session_id == chat.id, under)
    return list(db.scalars(query.order_by(Message.created_at, Message.id)))


def root_messages(db: Session, chat: ChatSession) -> list[Message]:
    return children(db, chat, None)


def siblings(db: Session, chat: ChatSession, message: Message) -> list[Message]:
    return children(db, chat, message.parent_id)


def select_message(db: Session, chat: ChatSession, message_id: str) -> Message:
    """Show `message_id` (a swipe or another branch): the leaf becomes its newest descendant."""
    node = read_message(db, chat, message_id)
    while kids := children(db, chat, node.id):
        node = kids[-1]
    chat.leaf_id = node.id
    return node


def swipe(db: Session, chat: ChatSession, message_id: str, step: int) -> Message:
    """Move `step` places among `message_id`'s siblings (wrapping) and show that one."""
    message = read_message(db, chat, message_id)
    group = siblings(db, chat, message)
    index = [m.id for m in group].index(message.id)
    return select_message(db, chat, group[(index + step) % len(group)].id)


def edit_message(db: Session, chat: ChatSession, message_id: str, content: str) -> Message:
    message = read_message(db, chat, message_id)
    if not content.strip():
        raise ChatInputError("a message cannot be edited to be empty")
    message.content = content
    chat.updated_at = utcnow()
    return message


def delete_message(db: Session, chat: ChatSession, message_id: str) -> None:
    """Delete a message and everything after it; the leaf moves to a sibling or the parent."""
    message = read_message(db, chat, message_id)
    on_screen = {m.id for m in path(db, chat)}
    doomed = [m.id for m in _subtree(db, chat, message.id)]
    parent_id = message.parent_id
    # One statement for the whole subtree: row by row, the unit of work (which knows
    # nothing of the parent link) may delete a parent first and lose its children to the
    # database's cascade.
    db.execute(delete(Message).where(Message.id.in_(doomed)))
    if message.id in on_screen:
        remaining = children(db, chat, parent_id)
        chat.leaf_id = select_message(db, chat, remaining[-1].id).id if remaining else parent_id


def branch(db: Session, chat: ChatSession, message_id: str) -> ChatSession:
    """A new session holding a copy of the path from the root to `message_id`."""
    messages = path(db, chat, read_message(db, chat, message_id).id)
    copy = ChatSession(
        user_id=chat.user_id,
        character_id=chat.character_id,
        title=chat.title,
        profile=chat.profile,
    )
    db.add(copy)
    db.flush()
    parent: str | None = None
    for message in messages:
        parent = add_message(db, copy, message.role, message.content, parent).id
    return copy


def _subtree(db: Session, chat: ChatSession, root_id: str) -> list[Message]:
    """`root_id` and its descendants, parents before children."""
    order = [read_message(db, chat, root_id)]
    for node in order:  # grows while it is walked: breadth first
        order.extend(children(db, chat, node.id))
    return order

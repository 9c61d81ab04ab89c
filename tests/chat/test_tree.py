"""The message tree (`chat/tree.py`) on a real SQLite store: greetings as root swipes,
append, swipe, select, edit, delete and branch, and sessions private to their user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limelight.chat import tree
from limelight.chat.tree import ChatError, ChatInputError
from limelight.store import Character, ChatSession, Message, Store, User

pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")
GREETINGS = ["Hello there.", "Good evening.", "Oh, it's you."]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('tree') / 'tree.db'}")
    with store.session() as db:
        db.add_all([User(id="alice"), User(id="bob")])
        db.add(Character(slug="ada", name="Ada", card={"spec": "chara_card_v3", "data": {}}))
    yield store
    store.close()


@pytest.fixture
def db(store: Store) -> Iterator[Session]:
    with store.session() as session:
        yield session


def new_chat(db: Session, greetings: list[str] = GREETINGS, user: str = "alice") -> ChatSession:
    character = db.scalar(select(Character).where(Character.slug == "ada"))
    assert character is not None
    return tree.create_session(db, user, character.id, list(greetings))


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


def say(db: Session, chat: ChatSession, *turns: str) -> list[Message]:
    """Append alternating user/assistant turns under the leaf."""
    added = []
    for i, text in enumerate(turns):
        added.append(tree.add_message(db, chat, ("user", "assistant")[i % 2], text, chat.leaf_id))
    return added


def test_greetings_are_root_swipes_and_the_first_is_on_screen(db: Session) -> None:
    chat = new_chat(db)
    roots = tree.root_messages(db, chat)
    assert contents(roots) == GREETINGS
    assert all(m.role == "assistant" and m.parent_id is None for m in roots)
    assert chat.leaf_id == roots[0].id
    assert contents(tree.path(db, chat)) == GREETINGS[:1]
    assert len(tree.siblings(db, chat, roots[0])) == 3


def test_a_session_without_greetings_is_empty(db: Session) -> None:
    chat = new_chat(db, greetings=[])
    assert chat.leaf_id is None
    assert tree.path(db, chat) == []
    first = tree.add_message(db, chat, "user", "Hi?", None)
    assert contents(tree.path(db, chat)) == ["Hi?"] and chat.leaf_id == first.id


def test_add_appends_under_the_leaf_and_path_walks_root_to_leaf(db: Session) -> None:
    chat = new_chat(db)
    user, reply = say(db, chat, "Hi Ada.", "Hi yourself.")
    assert chat.leaf_id == reply.id and reply.parent_id == user.id
    assert contents(tree.path(db, chat)) == [GREETINGS[0], "Hi Ada.", "Hi yourself."]
    assert contents(tree.path(db, chat, user.id)) == [GREETINGS[0], "Hi Ada."]


def test_add_refuses_a_bad_role_and_a_parent_from_another_session(db: Session) -> None:
    chat, other = new_chat(db), new_chat(db)
    with pytest.raises(ChatInputError, match="role"):
        tree.add_message(db, chat, "system", "psst", chat.leaf_id)
    with pytest.raises(ChatError, match="no message"):
        tree.add_message(db, chat, "user", "Hi", other.leaf_id)
    assert contents(tree.path(db, chat)) == GREETINGS[:1]


def test_swipe_wraps_around_the_siblings(db: Session) -> None:
    chat = new_chat(db)
    first, second, third = tree.root_messages(db, chat)
    assert tree.swipe(db, chat, first.id, 1).id == second.id and chat.leaf_id == second.id
    assert tree.swipe(db, chat, first.id, -1).id == third.id and chat.leaf_id == third.id
    assert tree.swipe(db, chat, third.id, 1).id == first.id
    assert tree.swipe(db, chat, second.id, 7).id == third.id  # 1 + 7 = 8 ≡ 2 (mod 3)


def test_swipe_on_a_lone_message_stays_put(db: Session) -> None:
    chat = new_chat(db)
    _, reply = say(db, chat, "Hi.", "Hello.")
    assert tree.swipe(db, chat, reply.id, 1).id == reply.id
    assert tree.swipe(db, chat, reply.id, -5).id == reply.id


def test_select_follows_the_newest_descendant(db: Session) -> None:
    chat = new_chat(db)
    user, old_reply, later = say(db, chat, "Hi.", "First reply.", "More from me.")
    new_reply = tree.add_message(db, chat, "assistant", "Second reply.", user.id)
    deeper = tree.add_message(db, chat, "user", "On the new branch.", new_reply.id)
    assert tree.select_message(db, chat, user.id).id == deeper.id
    assert chat.leaf_id == deeper.id
    # Back to the old reply: its own branch comes back on screen, to its tip.
    assert tree.swipe(db, chat, new_reply.id, -1).id == later.id
    assert contents(tree.path(db, chat)) == [GREETINGS[0], "Hi.", "First reply.", "More from me."]
    assert tree.select_message(db, chat, old_reply.id).id == later.id


def test_edit_changes_the_content_and_refuses_an_empty_one(db: Session) -> None:
    chat = new_chat(db)
    user, reply = say(db, chat, "Hi.", "Hello.")
    tree.edit_message(db, chat, user.id, "Hi, Ada!")
    assert contents(tree.path(db, chat)) == [GREETINGS[0], "Hi, Ada!", "Hello."]
    with pytest.raises(ChatInputError, match="empty"):
        tree.edit_message(db, chat, reply.id, "  \n ")
    assert db.get(Message, reply.id).content == "Hello."  # type: ignore[union-attr]


def count_messages(db: Session, chat: ChatSession) -> int:
    query = select(func.count()).select_from(Message).where(Message.session_id == chat.id)
    return int(db.scalar(query) or 0)


def test_delete_removes_the_subtree_and_moves_the_leaf_to_a_sibling(db: Session) -> None:
    chat = new_chat(db)
    user, old_reply, _ = say(db, chat, "Hi.", "First reply.", "And then?")
    new_reply = tree.add_message(db, chat, "assistant", "Second reply.", user.id)
    _, tip = say(db, chat, "Tell me more.", "Gladly.")
    assert chat.leaf_id == tip.id
    before = count_messages(db, chat)
    tree.delete_message(db, chat, new_reply.id)  # on screen: its subtree of three goes
    assert count_messages(db, chat) == before - 3
    assert contents(tree.path(db, chat)) == [GREETINGS[0], "Hi.", "First reply.", "And then?"]
    tree.delete_message(db, chat, old_reply.id)  # the last reply: the leaf falls to the parent
    assert chat.leaf_id == user.id
    assert [m.id for m in tree.children(db, chat, user.id)] == []


def test_deleting_another_branch_keeps_the_leaf(db: Session) -> None:
    chat = new_chat(db)
    user, old_reply = say(db, chat, "Hi.", "First reply.")
    new_reply = tree.add_message(db, chat, "assistant", "Second reply.", user.id)
    tree.delete_message(db, chat, old_reply.id)  # not on screen
    assert chat.leaf_id == new_reply.id
    assert contents(tree.siblings(db, chat, new_reply)) == ["Second reply."]


def test_deleting_a_greeting_shows_another_and_the_last_leaves_nothing(db: Session) -> None:
    chat = new_chat(db, greetings=GREETINGS[:2])
    first, second = tree.root_messages(db, chat)
    say(db, chat, "Hi.", "Hello.")
    tree.delete_message(db, chat, first.id)
    assert chat.leaf_id == second.id and count_messages(db, chat) == 1
    tree.delete_message(db, chat, second.id)
    assert chat.leaf_id is None and tree.path(db, chat) == []


def test_branch_copies_the_path_into_a_new_session(db: Session) -> None:
    chat = new_chat(db)
    user, reply, _later, _end = say(db, chat, "Hi.", "Hello.", "Later.", "The end.")
    tree.add_message(db, chat, "assistant", "A swipe not on the path.", user.id)
    copy = tree.branch(db, chat, reply.id)
    assert copy.id != chat.id and copy.user_id == chat.user_id
    assert copy.character_id == chat.character_id
    copied = tree.path(db, copy)
    assert contents(copied) == [GREETINGS[0], "Hi.", "Hello."]
    assert [m.role for m in copied] == ["assistant", "user", "assistant"]
    assert copy.leaf_id == copied[-1].id
    assert not {m.id for m in copied} & {m.id for m in tree.path(db, chat)}
    assert count_messages(db, copy) == 3  # siblings and later turns stay behind
    assert [m.session_id for m in copied] == [copy.id] * 3
    tree.edit_message(db, copy, copied[1].id, "Changed in the copy.")
    assert db.get(Message, user.id).content == "Hi."  # type: ignore[union-attr]


def test_another_users_session_is_not_found(db: Session) -> None:
    chat = new_chat(db, user="alice")
    assert tree.read_session(db, chat.id, "alice").id == chat.id
    with pytest.raises(ChatError, match="no session"):
        tree.read_session(db, chat.id, "bob")
    with pytest.raises(ChatError, match="no session"):
        tree.read_session(db, "0" * 32, "alice")


def test_a_message_of_another_session_is_not_found(db: Session) -> None:
    chat, other = new_chat(db), new_chat(db)
    foreign = tree.root_messages(db, other)[0]
    for operation in (
        lambda: tree.read_message(db, chat, foreign.id),
        lambda: tree.swipe(db, chat, foreign.id, 1),
        lambda: tree.select_message(db, chat, foreign.id),
        lambda: tree.edit_message(db, chat, foreign.id, "mine now"),
        lambda: tree.delete_message(db, chat, foreign.id),
        lambda: tree.branch(db, chat, foreign.id),
    ):
        with pytest.raises(ChatError, match="no message"):
            operation()
    assert foreign.content == GREETINGS[0] and count_messages(db, other) == 3

from streamrec.infra.notify import changed_message, changed_users


def test_a_notice_names_every_user_of_a_batch() -> None:
    users = ["user1", "a b", 'quote"and\\slash', "[not a list", "ünï"]
    assert changed_users(changed_message(users)) == users
    assert changed_users(changed_message(users).encode()) == users


def test_a_bare_user_id_is_one_user() -> None:
    """What workers before the batched notice published, and ids that merely look like JSON."""
    assert changed_users(b"196") == ["196"]
    assert changed_users("[broken") == ["[broken"]
    assert changed_users("[1, 2]") == ["[1, 2]"]

"""The file layer of guest drift (issue #14): the image's file list, the helper's `tree`, and
the pure comparison, on a real node's recording.

tests/data/snapshot/tree.txt is the `tree` verb's output on a freshly provisioned dev node
(pvdevf1, booted from the golden image built with this change); tests/data/drift/ holds the part
of that image's files.json.gz the recording needs and the node's rendered write_files. A fresh
node gives zero items; each mutation of the recording gives exactly its item.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from provision.boundary.process import run
from provision.config import playbook
from provision.core.errors import ImageError
from provision.core.model import DockerMode
from provision.desired.seed import FIRST_BOOT_DONE
from provision.drift import files as drift_files
from provision.drift.files import TreeError, file_items, parse_tree
from provision.drift.model import Fix, Item, Layer
from provision.image import files as image_files
from provision.image.files import FileEntry
from tests.test_facts_helper import HELPER_TEXT

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[1]


# --- the tree collector and the image walk agree ----------------------------------------------


def _collector() -> str:
    marker = "exec python3 -I - <<'PY'\n"
    tree_part = HELPER_TEXT.split("  tree)\n", 1)[1]
    return tree_part.split(marker, 1)[1].split("\nPY\n", 1)[0]


def _fake_rootfs(root: Path) -> None:
    (root / "etc/sudoers.d").mkdir(parents=True)
    (root / "etc/sudoers.d/README").write_text("readme\n")
    (root / "etc/tab\tand\nnewline").write_text("x")  # a name that tries to forge a line
    (root / "etc/back\\slash é").write_text("y")
    (root / "etc/fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "etc/fifo")  # never opened: a reader would block forever
    (root / "etc/link").symlink_to("/nonexistent/target")
    (root / "root").mkdir(mode=0o700)
    (root / "root/.bashrc").write_text("# root\n")
    (root / "home").mkdir()
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"\x7fELF" * 10)
    os.chmod(root / "usr/bin/tool", 0o4755)
    (root / "usr/local/sbin").mkdir(parents=True)
    (root / "usr/local/sbin/script").write_text("#!/bin/sh\n")
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd/system/a.service").write_text("[Unit]\n")
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")


def _run_collector(root: Path) -> str:
    """The helper's own tree program, its absolute roots moved below `root`."""
    prefix = repr(os.fsencode(root))
    program = _collector()
    for name in ("ROOTS", "LINKS", "HASHED"):
        line = next(ln for ln in program.splitlines() if ln.startswith(f"{name} = "))
        values = line.split("=", 1)[1].split("#", 1)[0]
        moved = values.replace('b"/', f'{prefix} + b"/')
        program = program.replace(line, f"{name} = {moved}")
    script = root.parent / "tree.py"
    script.write_text(program)
    text = run(["python3", "-I", str(script)]).stdout
    return text.replace(str(root), "")


def test_the_tree_collector_compiles_and_takes_no_arguments() -> None:
    compile(_collector(), "verify-facts tree", "exec")
    assert '[ "$#" -eq 0 ] || refuse "tree takes no arguments"' in HELPER_TEXT


def test_the_node_s_tree_and_the_image_walk_agree_entry_for_entry(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _fake_rootfs(root)
    tree = parse_tree(_run_collector(root))
    image = {e.path: e for e in image_files.walk(root)}
    assert set(tree) == set(image)
    assert "/etc/tab\\x09and\\x0anewline" in tree  # escaped: one line, nine fields
    assert "/etc/back\\\\slash \\xc3\\xa9" in tree
    assert drift_files.unescape("/etc/tab\\x09and\\x0anewline") == b"/etc/tab\tand\nnewline"
    for path, entry in image.items():
        node = tree[path]
        if path.startswith("/usr/bin"):  # stat only on the node (not below HASHED)
            assert node.sha256 is None
            node = dataclasses.replace(node, sha256=entry.sha256)
        assert node == entry, path
    assert tree["/etc/fifo"].type == "o" and tree["/etc/link"].target == "/nonexistent/target"
    assert tree["/usr/bin/tool"].mode == 0o4755 and tree["/bin"].target == "usr/bin"
    # Only what first boot is expected to change (and has not, on this tree) is reported.
    expected = {*drift_files.EXPECTED_LINKS, "/etc/sudoers.d"}
    assert {i.key for i in file_items("n", image, {}, tree, ())} == {f"file:{p}" for p in expected}


def test_the_tree_collector_stays_on_one_filesystem() -> None:
    program = _collector()
    assert "st.st_dev != root_dev" in program and "os.lstat" in program
    assert "O_NOFOLLOW" in program and "O_NONBLOCK" in program


# --- the image's file list ---------------------------------------------------------------------


def test_the_file_list_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    _fake_rootfs(root)
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    image_files.write_files_list(root, a)
    image_files.write_files_list(root, b)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0
    paths = [f["path"] for f in json.loads(gzip.decompress(a.read_bytes()))["files"]]
    assert paths == sorted(paths)
    (tmp_path / "img").mkdir()
    os.rename(a, tmp_path / "img" / image_files.FILES_ARTIFACT)
    loaded = image_files.image_files(tmp_path / "img")
    assert loaded == {e.path: e for e in image_files.walk(root)}
    tool = loaded["/usr/bin/tool"]
    assert tool.sha256 == hashlib.sha256(b"\x7fELF" * 10).hexdigest() and tool.type == "f"
    assert loaded["/lib"] == FileEntry("/lib", "l", 0o777, *_ids(root / "lib"), target="usr/lib")


def _ids(path: Path) -> tuple[int, int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_size, int(st.st_mtime)


def test_an_image_without_a_file_list_or_with_a_corrupt_one_is_an_image_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ImageError, match="no file list"):
        image_files.image_files(tmp_path)
    (tmp_path / image_files.FILES_ARTIFACT).write_bytes(b"not gzip")
    with pytest.raises(ImageError, match="corrupt"):
        image_files.image_files(tmp_path)
    doc = {"format": 99, "files": []}
    (tmp_path / image_files.FILES_ARTIFACT).write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(ImageError, match="format 99"):
        image_files.image_files(tmp_path)


# --- parse_tree refuses what it cannot read whole ---------------------------------------------

GOOD = "\t".join(("/etc/x", "f", "644", "0", "0", "1", "2", "a" * 64, "-"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "does not start with"),
        (f"# provision-facts tree 1\n{GOOD}\n", "no end line"),
        (f"# provision-facts tree 1\n{GOOD}\n# end 2 0.1\n", "says 2 entries and has 1"),
        (f"# provision-facts tree 1\n{GOOD}\t-\n# end 1 0.1\n", "10 fields"),
        (f"# provision-facts tree 1\n{GOOD.replace('f', 'q', 1)}\n# end 1 0.1\n", "a type"),
        (f"# provision-facts tree 1\n{GOOD.replace('a' * 64, 'zz')}\n# end 1 0.1\n", "sha256"),
        (f"# provision-facts tree 1\n{GOOD.replace('644', '9x')}\n# end 1 0.1\n", "/etc/x"),
        (f"# provision-facts tree 1\n{GOOD}\n{GOOD}\n# end 2 0.1\n", "listed twice"),
    ],
)
def test_parse_tree_refuses(text: str, message: str) -> None:
    with pytest.raises(TreeError, match=message):
        parse_tree(text)


def test_parse_tree_reads_a_line() -> None:
    tree = parse_tree(f"# provision-facts tree 1\n{GOOD}\n# end 1 0.1\n")
    assert tree == {"/etc/x": FileEntry("/etc/x", "f", 0o644, 0, 0, 1, 2, "a" * 64)}
    assert stat.S_IMODE(tree["/etc/x"].mode) == 0o644
    assert Layer.GUEST and Fix.MANUAL  # the model the items use


# --- the recorded node ------------------------------------------------------------------------

TREE_TEXT = (DATA / "snapshot" / "tree.txt").read_text()
USER_DATA = (DATA / "drift" / "user-data.yaml").read_text()


@pytest.fixture(scope="module")
def image() -> dict[str, FileEntry]:
    return image_files.from_bytes((DATA / "drift" / "files.json.gz").read_bytes(), "test data")


def _seed() -> dict[str, str]:
    """What drift expects written on the recorded node (drift.run.node_items): the seed, the
    first-boot mark `up` leaves, and the files the repo's post-boot playbook puts (it ran)."""
    puts = {
        step.action.path: step.action.content
        for step in playbook.load(ROOT / "playbooks" / "post-boot.yaml").steps
        if isinstance(step.action, playbook.PutAction)
    }
    return {**drift_files.seed_contents(USER_DATA), FIRST_BOOT_DONE: "", **puts}


def _items(image: dict[str, FileEntry], tree: dict[str, FileEntry]) -> list[Item]:
    return file_items("pvdevf1", image, _seed(), tree)


def _tree() -> dict[str, FileEntry]:
    return parse_tree(TREE_TEXT)


def test_a_fresh_node_has_no_file_drift(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    assert len(tree) > 15000 and "/usr/bin/dockerd" not in tree  # the whole node, stat'ed
    assert _items(image, tree) == []


def test_the_recording_holds_hashes_never_key_material() -> None:
    assert "PRIVATE KEY" not in TREE_TEXT and "BEGIN" not in TREE_TEXT
    assert "REDACTED" in USER_DATA and "BEGIN OPENSSH PRIVATE KEY" not in USER_DATA


def test_what_cloud_init_derives_from_the_seed_is_accounted_for_by_content() -> None:
    seed = drift_files.seed_contents(USER_DATA)
    tree = _tree()
    for path in (
        "/etc/hostname",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/home/ops/.ssh/authorized_keys",
        "/home/verifier/.ssh/authorized_keys",
        "/root/.ssh/authorized_keys",
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        "/etc/ssh/sshd_config.d/10-provision-hardening.conf",
    ):
        assert tree[path].sha256 == hashlib.sha256(seed[path].encode()).hexdigest(), path


def _with(tree: dict[str, FileEntry], entry: FileEntry) -> dict[str, FileEntry]:
    return {**tree, entry.path: entry}


def _only(items: list[Item]) -> Item:
    assert len(items) == 1, [(i.key, i.expected, i.actual) for i in items]
    return items[0]


def test_a_new_file_in_sudoers_d_is_unaccounted(image: dict[str, FileEntry]) -> None:
    extra = FileEntry("/etc/sudoers.d/extra", "f", 0o440, 0, 0, 30, 1796140200, "c" * 64)
    got = _only(_items(image, _with(_tree(), extra)))
    assert (got.key, got.expected, got.actual) == (
        "file:/etc/sudoers.d/extra",
        "absent",
        "unaccounted file",
    )
    assert got.fix is Fix.MANUAL and got.layer is Layer.GUEST and got.node == "pvdevf1"


def test_an_edited_sshd_drop_in_differs_from_what_was_rendered(
    image: dict[str, FileEntry],
) -> None:
    tree = _tree()
    path = "/etc/ssh/sshd_config.d/10-provision-hardening.conf"
    rendered = hashlib.sha256(drift_files.seed_contents(USER_DATA)[path].encode()).hexdigest()
    edited = dataclasses.replace(tree[path], sha256="d" * 64, size=tree[path].size + 20)
    got = _only(_items(image, _with(tree, edited)))
    assert (got.key, got.expected, got.actual, got.fix) == (
        f"file:{path}",
        f"sha256 {rendered[:12]} (rendered)",
        "sha256 dddddddddddd",
        Fix.REPLACE,
    )


def test_a_chmod_of_an_image_file_is_drift(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    path = "/etc/passwd"  # its content may change at first boot, its mode may not
    got = _only(_items(image, _with(tree, dataclasses.replace(tree[path], mode=0o666))))
    assert (got.key, got.expected, got.actual) == (f"file:{path}", "mode 0644", "mode 0666")


def test_the_hardening_chmod_is_expected_and_undoing_it_is_drift(
    image: dict[str, FileEntry],
) -> None:
    tree = _tree()
    path = "/etc/ssh/sshd_config"
    assert image[path].mode == 0o644 and tree[path].mode == 0o600
    got = _only(_items(image, _with(tree, dataclasses.replace(tree[path], mode=0o644))))
    assert (got.key, got.expected, got.actual) == (f"file:{path}", "mode 0600", "mode 0644")


def test_a_changed_binary_under_usr_bin_is_seen_by_its_size(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    path = "/usr/bin/sudo"
    assert tree[path].sha256 is None  # stat only below /usr outside /usr/local and systemd's
    bigger = dataclasses.replace(tree[path], size=tree[path].size + 4096)
    got = _only(_items(image, _with(tree, bigger)))
    assert (got.key, got.fix) == (f"file:{path}", Fix.REPLACE)
    assert got.expected == f"size {tree[path].size}" and got.actual == f"size {bigger.size}"


def test_a_deleted_image_file_is_missing(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    del tree["/etc/debian_version"]
    got = _only(_items(image, tree))
    assert (got.key, got.expected, got.actual) == ("file:/etc/debian_version", "file", "missing")


def test_a_new_file_under_root_is_unaccounted(image: dict[str, FileEntry]) -> None:
    planted = FileEntry("/root/.bash_history", "f", 0o600, 0, 0, 12, 1796140300, "e" * 64)
    got = _only(_items(image, _with(_tree(), planted)))
    assert (got.key, got.actual) == ("file:/root/.bash_history", "unaccounted file")


def test_a_new_directory_is_one_item_with_its_count(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    for name in ("/etc/evil", "/etc/evil/a", "/etc/evil/b"):
        kind = "d" if name == "/etc/evil" else "f"
        tree = _with(tree, FileEntry(name, kind, 0o755, 0, 0, 1, 1, None))
    got = _only(_items(image, tree))
    assert got.key == "file:/etc/evil" and got.detail == "a directory with 2 entries below it"


def test_a_file_below_an_allowed_directory_is_allowed_but_not_beside_it(
    image: dict[str, FileEntry],
) -> None:
    tree = _tree()
    data = FileEntry("/home/app/.local/share/docker/volumes/x", "f", 0o600, 1001, 1001, 1, 1)
    assert _items(image, _with(tree, data)) == []
    beside = FileEntry("/home/app/.local/share/evil", "f", 0o600, 1001, 1001, 1, 1)
    assert _only(_items(image, _with(tree, beside))).key == "file:/home/app/.local/share/evil"


def test_a_link_the_hardening_makes_must_point_where_it_set(image: dict[str, FileEntry]) -> None:
    tree = _tree()
    path = "/etc/sysctl.d/99-protect-links.conf"
    moved = dataclasses.replace(tree[path], target="/usr/lib/sysctl.d/99-protect-links.conf")
    got = _only(_items(image, _with(tree, moved)))
    assert got.key == f"file:{path}" and got.actual.endswith("99-protect-links.conf")


def test_a_directory_is_compared_by_type_mode_and_owner_only(
    image: dict[str, FileEntry],
) -> None:
    tree = _tree()
    touched = dataclasses.replace(tree["/etc/default"], mtime=1, size=8192)
    assert _items(image, _with(tree, touched)) == []
    chowned = dataclasses.replace(tree["/etc/default"], uid=1000)
    assert _only(_items(image, _with(tree, chowned))).actual == "uid 1000"


def test_every_allow_pattern_is_used_by_the_recording() -> None:
    """The allow-list is what a fresh node shows: a pattern nothing matches is stale."""
    tree = _tree()
    for pattern in drift_files.ALLOW:
        assert any(fnmatch.fnmatchcase(p, pattern) for p in tree), pattern
    assert not any(p in ("*", "/etc/*", "/home/*", "/usr/*") for p in drift_files.ALLOW)


def _docker_disabled(tree: dict[str, FileEntry]) -> dict[str, FileEntry]:
    """The recorded (rootful) node as `systemctl disable docker.service docker.socket` leaves it."""
    out = {p: e for p, e in tree.items() if p not in drift_files.DOCKER_ENABLED}
    for path, target in drift_files.DOCKER_DISABLED_LINKS.items():
        out[path] = FileEntry(path, "l", 0o777, 0, 0, len(target), 1796140200, None, target)
    return out


def test_a_node_without_the_system_daemon_expects_docker_disabled(
    image: dict[str, FileEntry],
) -> None:
    seed = _seed()
    disabled = _docker_disabled(_tree())
    for mode in (DockerMode.ROOTLESS, DockerMode.NONE):
        assert file_items("n", image, seed, disabled, docker=mode) == []
        # Enabled again by hand: drift, on the node whose daemon must not run.
        assert [i.key for i in file_items("n", image, seed, _tree(), docker=mode)] == sorted(
            [f"file:{p}" for p in drift_files.DOCKER_ENABLED]
            + [f"file:{p}" for p in drift_files.DOCKER_DISABLED_LINKS]
        )
    # And the other way round on a rootful node.
    found = {i.key for i in file_items("n", image, seed, disabled, docker=DockerMode.ROOTFUL)}
    assert {f"file:{p}" for p in drift_files.DOCKER_ENABLED} <= found


def _mutated_texts() -> dict[str, str]:
    lines = TREE_TEXT.split("\n")
    body = lines[1:-2]

    def replaced(prefix: str, field: int, value: str) -> list[str]:
        out = []
        for line in body:
            if line.startswith(prefix + "\t"):
                parts = line.split("\t")
                parts[field] = value
                line = "\t".join(parts)
            out.append(line)
        return out

    extra = "\t".join(
        ("/etc/sudoers.d/extra", "f", "440", "0", "0", "9", "1796140200", "c" * 64, "-")
    )
    variants = {
        "clean": body,
        "chmod": replaced("/etc/passwd", 2, "666"),
        "sshd_config mode undone": replaced("/etc/ssh/sshd_config", 2, "644"),
        "seed file edited": replaced(
            "/etc/ssh/sshd_config.d/10-provision-hardening.conf", 7, "d" * 64
        ),
        "binary grown": replaced("/usr/bin/sudo", 5, "999999"),
        "deleted": [x for x in body if not x.startswith("/etc/issue\t")],
        "added": sorted([*body, extra]),
    }
    return {
        name: "\n".join([lines[0], *v, f"# end {len(v)} 1.0", ""]) for name, v in variants.items()
    }


@pytest.mark.parametrize("name", list(_mutated_texts()))
def test_judging_only_the_lines_that_differ_from_the_image_changes_nothing(
    image: dict[str, FileEntry], name: str
) -> None:
    """drift parses only the lines that differ from the image's (parse_changed): the items
    must be exactly those of the whole tree parsed and compared."""
    text = _mutated_texts()[name]
    seed = _seed()
    whole = file_items("n", image, seed, parse_tree(text))
    tree, same = drift_files.parse_changed(text, drift_files.image_lines(image))
    assert len(tree) < 2000 and len(same) > 14000  # the point of it
    assert file_items("n", image, seed, tree, same=same) == whole
    assert (whole == []) == (name == "clean")


def test_the_node_hashes_what_drift_thinks_it_hashes() -> None:
    collector = _collector()
    hashed = tuple(f'b"{h}"' for h in drift_files.NODE_HASHED)
    assert f"HASHED = ({', '.join(hashed)})" in collector

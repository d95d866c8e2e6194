#!/usr/bin/env bash
# The namespace-backend tests once more, as an ordinary user (no root): many clusters give none.
# Run as root by `make test`; creates the user (useradd gives it a subordinate uid range, so
# sandboxes get uids of their own through newuidmap), copies the tracked tree where that user
# can read it, builds a venv of its own from /usr/bin/python3 and runs the tests there.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "unprivileged tests: already running as an ordinary user; the main suite covered it"
    exit 0
fi
user=${VMPOOL_TEST_USER:-vmpool-ci}
root=${VMPOOL_UNPRIVILEGED_DIR:-/tmp/vmpool-unprivileged}
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
rm -rf "$root/src"
mkdir -p "$root/src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$root/src"
chown -R "$user:" "$root"
tests=(tests/vmpool/test_sandbox.py tests/vmpool/test_pool.py tests/vmpool/test_unprivileged.py tests/vmpool/test_session.py tests/vmpool/test_session_fork.py
       tests/rewards/test_hacks.py tests/rewards/test_early_stop.py tests/harness/test_harness_grading.py
       tests/harness/test_harness_resume.py tests/harness/test_harness_cli.py)
su "$user" -s /bin/bash -c "
    set -euo pipefail
    cd '$root/src'
    test -x '$root/venv/bin/python' || /usr/bin/python3 -m venv '$root/venv'
    '$root/venv/bin/python' -m pip install -q --disable-pip-version-check -e '.[dev]'
    '$root/venv/bin/python' -m pytest -q -p no:cacheprovider -m 'not microvm and not ray and not slow' ${tests[*]}
"

"""Leases: which annotator holds which image, and until when (team mode, issue 13).

`claim` hands an annotator the next images of a project — unlabeled ones first, then images in progress that
nobody holds — each on a lease that runs out after `lease_s` seconds unless it is renewed. Two annotators never
hold the same image while its lease is live, on either backend, for two reasons that do not depend on each other:

- the lease itself is one row per image (`leases.image_id` is the primary key), taken by an upsert that only
  succeeds while the row is free (released, or expired): of two claimers racing for one image, the second
  upsert finds the first one's live row and takes nothing;
- candidates are picked so that claimers rarely race at all: on PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED`
  (a second claimer skips the images the first is taking, without waiting; the claim takes no global write
  turn), on SQLite one IMMEDIATE transaction (one writer at a time).

Times: a lease's expiry is seconds since the epoch on the *database's* clock (the server's, or this machine's for
a SQLite file), so annotators whose machines disagree about the time still agree on who holds what. A lease that
ran out is free again: an annotator's process that was killed gives its images back after the lease time, and
every edit it committed stays (each edit is its own transaction).

Gold images in the stream: `projects.gold_share` of a project is the chance that a claimed image is a gold image
the annotator has not been scored on yet. Gold images are served only that way (never as ordinary images), and
like any other: before the annotator gets one, the boxes an earlier annotator drew on it are put aside (soft
deleted, so the earlier annotator's score is kept) and the image is unlabeled again, so it is labeled blind;
the reference boxes stay in `gold_boxes`. Submitting it scores the annotator (`projects.team.submit_claimed`, or
the window's gold hook), as `labeler quality` has always done.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from projects.errors import LeaseError, WorkspaceError, WriteConflictError
from projects.store.common import StoreBase, now

DEFAULT_LEASE_S = 15 * 60.0
MAX_USER_CHARS = 63  # PostgreSQL's limit for a role name: an annotator may be one (`labeler team grant`)
_CLOCK = {"sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
          "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"}
_SKIP_LOCKED = {"sqlite": "", "postgresql": " FOR UPDATE OF i SKIP LOCKED"}
_NOTIFY = "SELECT pg_notify('labeler_progress', ?)"  # PostgreSQL: the windows' progress panels listen (LISTEN)
PROGRESS_CHANNEL = "labeler_progress"
_FREE = "NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = i.id AND l.released_at IS NULL AND l.expires_at > ?)"
_ROUNDS = 5  # candidates picked again when a racing claimer took some first (PostgreSQL; bounded)
_BUSY_ROUNDS = 40  # claims tried again while every free image is being claimed by others (about 4 s at most)


@dataclass(frozen=True)
class Lease:
    image_id: int
    holder: str
    expires_at: float  # seconds since the epoch, on the database's clock
    gold: bool
    claimed_at: str  # ISO-8601 UTC

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "holder": self.holder, "gold": self.gold, "claimed_at": self.claimed_at,
                "expires_at": datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")}


def check_user(user: str) -> str:
    """An annotator's name as stored in leases and annotations: non-empty, printable, short enough to be a login."""
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_CHARS or not user.isprintable():
        raise LeaseError(f"{user!r}: an annotator is named by 1 to {MAX_USER_CHARS} printable characters (--user)")
    return user


def check_lease_s(lease_s: float) -> float:
    if not lease_s > 0 or lease_s > 7 * 24 * 3600:
        raise LeaseError(f"a lease lasts more than 0 s and at most a week, got {lease_s!r} s")
    return float(lease_s)


class LeaseStore(StoreBase):
    # --- the clock and notifications ------------------------------------------------------------
    def db_clock(self) -> float:
        """Seconds since the epoch on the database's clock (the server's on PostgreSQL)."""
        return float(self.db.execute(_CLOCK[self.db.dialect]).fetchone()[0])

    def _notify(self, project_id: int) -> None:
        """Tell the other windows that claims or submissions of this project changed (sent on commit)."""
        if self.db.dialect == "postgresql":
            self.db.execute(_NOTIFY, [str(project_id)])

    # --- the project's gold share ---------------------------------------------------------------
    def gold_share(self, project: str) -> float:
        row = self.db.execute("SELECT gold_share FROM projects WHERE id = ?", [self.project_id(project)]).fetchone()
        return float(row[0] or 0.0)

    def set_gold_share(self, project: str, share: float) -> None:
        """The share of claimed images that are gold images (0 to 1; 0: none are served)."""
        if not 0.0 <= float(share) <= 1.0:
            raise WorkspaceError(f"a gold share is between 0 and 1, got {share!r}")
        pid = self.project_id(project)
        with self.db.atomic():
            self.db.execute("UPDATE projects SET gold_share = ? WHERE id = ?", [float(share), pid])

    # --- claiming ---------------------------------------------------------------------------------
    def claim(self, project: str, user: str, n: int = 1, lease_s: float = DEFAULT_LEASE_S,
              rng: random.Random | None = None) -> list[Lease]:
        """Lease up to `n` more images of `project` to `user`: unlabeled first, then in progress, each free (no live
        lease of anyone); with the project's gold share, some are gold images `user` was not scored on yet. Fewer
        when the project runs out, or while the last free images are being claimed by others at this very moment;
        none only when no free image is left. The images `user` already holds are not counted: `leases()` lists
        them (a window that restarts resumes them)."""
        check_user(user)
        lease_s = check_lease_s(lease_s)
        if int(n) < 1:
            raise LeaseError(f"claim at least one image, got --n {n}")
        pid = self.project_id(project)
        share = self.gold_share(project)
        pick = rng or random
        gold = sum(pick.random() < share for _ in range(int(n))) if share > 0 else 0
        conflicts = 0
        for attempt in range(_BUSY_ROUNDS):
            try:
                with self.db.row_locked():
                    got = self._claim(pid, user, int(n), gold, lease_s)
                    if got:
                        self._notify(pid)
            except WriteConflictError:  # a deadlock the server broke (PostgreSQL): nothing was written, go again
                conflicts += 1
                if conflicts == 3:
                    raise
                continue
            # None taken while free images remain: other claimers hold their rows this very moment (SKIP LOCKED
            # passed them over). Their claims end in milliseconds; look again rather than say "none left".
            if got or not self._any_free(pid, user, gold):
                return got
            time.sleep(0.005 * (attempt + 1))
        return []

    def _any_free(self, pid: int, user: str, gold: int) -> bool:
        clock = self.db_clock()
        regular = self.db.execute(
            f"SELECT 1 FROM images i WHERE i.project_id = ? AND i.status IN ('unlabeled', 'in_progress') AND {_FREE} "
            "AND NOT EXISTS (SELECT 1 FROM gold_images g WHERE g.image_id = i.id) LIMIT 1", [pid, clock]).fetchone()
        return regular is not None or (gold > 0 and self.db.execute(
            f"SELECT 1 FROM images i JOIN gold_images g ON g.image_id = i.id WHERE i.project_id = ? AND {_FREE} "
            "AND NOT EXISTS (SELECT 1 FROM quality_scores q WHERE q.image_id = i.id AND q.author = ?) LIMIT 1",
            [pid, clock, user]).fetchone() is not None)

    def _claim(self, pid: int, user: str, n: int, gold: int, lease_s: float) -> list[Lease]:
        clock, t = self.db_clock(), now()
        got: list[Lease] = []
        lock = _SKIP_LOCKED[self.db.dialect]
        if gold:
            sql = ("SELECT i.id FROM images i JOIN gold_images g ON g.image_id = i.id WHERE i.project_id = ? "
                   f"AND {_FREE} AND NOT EXISTS (SELECT 1 FROM quality_scores q WHERE q.image_id = i.id "
                   f"AND q.author = ?) ORDER BY i.id LIMIT ?{lock}")
            taken = self._take(sql, [pid, clock, user], gold, pid, user, True, clock, lease_s, t)
            for lease in taken:
                self._serve_gold(lease.image_id, user, t)
            got += taken
        for status in ("unlabeled", "in_progress"):
            if len(got) >= n:
                break
            sql = (f"SELECT i.id FROM images i WHERE i.project_id = ? AND i.status = ? AND {_FREE} "
                   f"AND NOT EXISTS (SELECT 1 FROM gold_images g WHERE g.image_id = i.id) ORDER BY i.id LIMIT ?{lock}")
            got += self._take(sql, [pid, status, clock], n - len(got), pid, user, False, clock, lease_s, t)
        return got

    def _take(self, sql: str, params: list[Any], want: int, pid: int, user: str, gold: bool, clock: float,
              lease_s: float, t: str) -> list[Lease]:
        """Pick up to `want` candidates and take their leases; a candidate a racing claimer took first is skipped
        (its upsert takes nothing) and others are picked, a bounded number of times."""
        got: list[Lease] = []
        tried: set[int] = set()
        for _ in range(_ROUNDS):
            ids = [r[0] for r in self.db.execute(sql, [*params, want - len(got) + len(tried)]).fetchall()
                   if r[0] not in tried]
            if not ids:
                break
            for image_id in ids:
                if len(got) == want:
                    return got
                tried.add(image_id)
                lease = self._upsert_lease(image_id, pid, user, gold, clock, lease_s, t)
                if lease is not None:
                    got.append(lease)
            if len(got) == want:
                break
        return got

    def _upsert_lease(self, image_id: int, pid: int, user: str, gold: bool, clock: float, lease_s: float,
                      t: str) -> Lease | None:
        """Take the lease of one image when it is free (no row, released or expired); None when it is not."""
        rows = self.db.execute(
            "INSERT INTO leases (image_id, project_id, holder, gold, claimed_at, expires_at, released_at) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (image_id) DO UPDATE SET project_id = excluded.project_id, "
            "holder = excluded.holder, gold = excluded.gold, claimed_at = excluded.claimed_at, "
            "expires_at = excluded.expires_at, released_at = NULL "
            "WHERE leases.released_at IS NOT NULL OR leases.expires_at <= ? RETURNING image_id",
            [image_id, pid, user, int(gold), t, clock + lease_s, clock]).fetchall()
        return Lease(image_id, user, clock + lease_s, gold, t) if rows else None

    def _serve_gold(self, image_id: int, user: str, t: str) -> None:
        """A gold image is labeled blind: an earlier annotator's boxes are put aside (soft deleted, versions bumped,
        their score stays) and the image is unlabeled again."""
        self.db.execute("UPDATE annotations SET deleted_at = ?, updated_at = ?, updated_by = ?, version = version + 1 "
                        "WHERE image_id = ? AND deleted_at IS NULL", [t, t, user, image_id])
        self.db.execute("UPDATE images SET status = 'unlabeled', status_updated_at = ?, submitted_by = NULL "
                        "WHERE id = ? AND status <> 'unlabeled'", [t, image_id])

    def claim_image(self, image_id: int, user: str, lease_s: float = DEFAULT_LEASE_S) -> Lease:
        """Lease this image to `user` (going back to an image in the window): renewed when `user` holds it, taken
        when it is free; `LeaseError` naming the holder and until when if another annotator holds it."""
        check_user(user)
        lease_s = check_lease_s(lease_s)
        image = self.image(image_id)
        with self.db.row_locked():
            clock = self.db_clock()
            rows = self.db.execute(
                "UPDATE leases SET expires_at = ? WHERE image_id = ? AND holder = ? AND released_at IS NULL "
                "RETURNING gold, claimed_at", [clock + lease_s, image_id, user]).fetchall()
            if rows:
                return Lease(image_id, user, clock + lease_s, bool(rows[0][0]), rows[0][1])
            lease = self._upsert_lease(image_id, image["project_id"], user, False, clock, lease_s, now())
            if lease is None:
                holder, expires = self.db.execute("SELECT holder, expires_at FROM leases WHERE image_id = ?",
                                                  [image_id]).fetchone()
                until = datetime.fromtimestamp(expires, UTC).strftime("%H:%M:%S UTC")
                raise LeaseError(f"image {image_id} ({image['path']}) is held by {holder} until {until}")
            self._notify(image["project_id"])
            return lease

    def holder(self, image_id: int) -> Lease | None:
        """The live lease on this image, whoever holds it; None when it is free."""
        row = self.db.execute("SELECT image_id, holder, expires_at, gold, claimed_at FROM leases WHERE image_id = ? "
                              "AND released_at IS NULL AND expires_at > ?", [image_id, self.db_clock()]).fetchone()
        return Lease(row[0], row[1], float(row[2]), bool(row[3]), row[4]) if row else None

    def check_not_held_by_another(self, image_id: int, user: str) -> None:
        """`LeaseError` when another annotator holds this image now (its lease is live): `user` must not submit it."""
        lease = self.holder(image_id)
        if lease is not None and lease.holder != user:
            until = datetime.fromtimestamp(lease.expires_at, UTC).strftime("%H:%M:%S UTC")
            raise LeaseError(f"image {image_id} is held by {lease.holder} until {until}: your lease on it ran out "
                             "and it went to them; your edits on it were kept")

    # --- keeping and giving back --------------------------------------------------------------------
    def leases(self, project: str, user: str | None = None) -> list[Lease]:
        """The live leases of a project (of one annotator), oldest claim first."""
        params: list[Any] = [self.project_id(project), self.db_clock()]
        sql = ("SELECT image_id, holder, expires_at, gold, claimed_at FROM leases WHERE project_id = ? "
               "AND released_at IS NULL AND expires_at > ?")
        if user is not None:
            sql, params = sql + " AND holder = ?", [*params, user]
        return [Lease(r[0], r[1], float(r[2]), bool(r[3]), r[4])
                for r in self.db.execute(sql + " ORDER BY claimed_at, image_id", params).fetchall()]

    def renew_leases(self, image_ids: Iterable[int], user: str, lease_s: float = DEFAULT_LEASE_S) -> list[int]:
        """Push back the expiry of `user`'s leases on these images; returns the ones renewed. A lease that ran out
        is renewed too while nobody else took the image; one another annotator took is not (it is theirs now)."""
        ids = [int(i) for i in image_ids]
        lease_s = check_lease_s(lease_s)
        if not ids:
            return []
        with self.db.row_locked():
            clock = self.db_clock()
            marks = ",".join("?" * len(ids))
            return sorted(r[0] for r in self.db.execute(
                f"UPDATE leases SET expires_at = ? WHERE image_id IN ({marks}) AND holder = ? AND released_at IS NULL "
                "RETURNING image_id", [clock + lease_s, *ids, user]).fetchall())

    def release_leases(self, image_ids: Iterable[int], user: str) -> list[int]:
        """Give back `user`'s leases on these images (closing the window, skipping an image); returns them."""
        ids = [int(i) for i in image_ids]
        if not ids:
            return []
        with self.db.row_locked():
            released = self._release(ids, user)
        return released

    def _release(self, ids: Sequence[int], user: str) -> list[int]:
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"UPDATE leases SET released_at = ? WHERE image_id IN ({marks}) AND holder = ? "
                               "AND released_at IS NULL RETURNING image_id, project_id", [now(), *ids, user]).fetchall()
        for pid in {r[1] for r in rows}:
            self._notify(pid)
        return sorted(r[0] for r in rows)

    def finish_lease(self, image_id: int, user: str) -> bool:
        """The image was submitted by `user`: record who submitted it and give its lease back, in one transaction.
        False when the image is not submitted (nothing is recorded, the lease is kept)."""
        with self.db.row_locked():
            done = self.db.execute("UPDATE images SET submitted_by = ? WHERE id = ? AND status = 'submitted' "
                                   "RETURNING project_id", [user, image_id]).fetchall()
            if not done:
                return False
            self._release([image_id], user)
            self._notify(done[0][0])  # also without a lease: the submitted count changed
        return True

    # --- the team's progress ---------------------------------------------------------------------------
    def team_progress(self, project: str, since: str | None = None) -> list[dict[str, Any]]:
        """Per annotator: images submitted since `since` (ISO-8601 UTC; default: local midnight today) and images
        held now. Annotators with neither are left out; sorted by name."""
        pid = self.project_id(project)
        since = since or local_midnight_utc()
        out: dict[str, dict[str, Any]] = {}
        for who, count in self.db.execute(
                "SELECT submitted_by, COUNT(*) FROM images WHERE project_id = ? AND status = 'submitted' "
                "AND status_updated_at >= ? AND submitted_by IS NOT NULL GROUP BY submitted_by", [pid, since]):
            out.setdefault(who, {"annotator": who, "submitted_today": 0, "claimed_now": 0})["submitted_today"] = count
        for who, count in self.db.execute(
                "SELECT holder, COUNT(*) FROM leases WHERE project_id = ? AND released_at IS NULL AND expires_at > ? "
                "GROUP BY holder", [pid, self.db_clock()]):
            out.setdefault(who, {"annotator": who, "submitted_today": 0, "claimed_now": 0})["claimed_now"] = count
        return [out[k] for k in sorted(out)]


def local_midnight_utc() -> str:
    """Today's local midnight as an ISO-8601 UTC stamp, comparable with the stored ones."""
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(UTC).isoformat(timespec="milliseconds")

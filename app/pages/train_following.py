"""Following a run that another process trains (a terminal, torchrun), on the Train page.
Part of :class:`app.pages.train_page.TrainPage`."""

from __future__ import annotations

from pathlib import Path

from app.model.run_actions import display_name


class FollowingRuns:
    """The Train page's following of a run trained elsewhere, through its ``follower``
    (app.child.run_follower.RunFollower, which sends the engine child's signals)."""

    @property
    def following(self) -> Path | None:
        """The run folder followed live (trained by another process), or None."""
        return self.follower.run_dir

    def follow(self, run_dir: Path) -> bool:
        """Show ``run_dir``, trained by another process, as if it were this page's run:
        its events.jsonl is read from the start, then every second for what was appended.
        Refused (False, with the reason on the page) while this page trains a run."""
        run_dir = Path(run_dir)
        if self.engine.is_running():
            self._say(f"Cannot follow {display_name(run_dir)}: a run is training in this "
                      "window. Stop it first, or double-click the other run to compare its "
                      "curves.")
            return False
        self.stop_following(quiet=True)
        self.run_dir = run_dir
        self._forget_shown()
        self.log.start_run(clear=True)
        self.progress.setValue(0)
        self.follower.follow(run_dir)
        self._update_buttons()
        self.follower.poll()
        return True

    def stop_following(self, quiet: bool = False) -> None:
        """Stop reading the followed run (it goes on where it runs); its curves stay shown."""
        if self.following is None:
            return
        name = display_name(self.following)
        self.follower.stop()
        self._after_following()
        if not quiet:
            self._say(f"Stopped following {name}; it goes on training where it runs.")
        self._update_buttons()

    def _after_following(self) -> None:
        if self.history.status == "running":
            self.run_dir = None  # not resumable from here while it may still be going

    def _on_followed_gone(self, run_dir: Path) -> None:
        self._after_following()
        self._update_buttons()
        self._say(f"Stopped following {display_name(run_dir)}: its folder is gone "
                  "(deleted or moved).")
        self.run_changed.emit()

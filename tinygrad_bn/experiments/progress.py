"""Progress of training runs: tqdm bars on a terminal, one plain line per run every few seconds
otherwise (a log file gets readable lines, not escape codes)."""
import sys
import time

PLAIN_INTERVAL = 5.0  # seconds between two plain lines of the same run


def interactive():
    """Bars only when both stdout and stderr are terminals; anything redirected gets lines."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class PlainProgress:
    """tqdm's ``update``/``set_postfix``/``close``, printed as one line every ``interval`` s."""

    def __init__(self, total, label, interval=PLAIN_INTERVAL, stream=None):
        self.total, self.label, self.interval = total, label, interval
        self.stream = stream if stream is not None else sys.stdout
        self.n, self.postfix = 0, {}
        self.start = self.last = time.perf_counter()

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self.print_line()

    def set_postfix(self, refresh=False, **values):
        self.postfix.update(values)

    def close(self):
        self.print_line(final=True)

    def print_line(self, final=False):
        elapsed = time.perf_counter() - self.start
        state = "done" if self.n >= self.total else "stopped" if final else \
            f"{100 * self.n / max(self.total, 1):.0f}%"
        values = "".join(f", {k.replace('_', ' ')} {v}" for k, v in self.postfix.items())
        print(f"{self.label}: step {self.n:,}/{self.total:,} ({state}) after {elapsed:.0f} s"
              f"{values}", file=self.stream, flush=True)


def progress_bar(total, label, position=None, leave=True):
    """A bar counting training steps: tqdm (an optional [demo] package) on a terminal, else
    a ``PlainProgress`` that prints a line now and then."""
    if not interactive():
        return PlainProgress(total, label or "train")
    from .optional import require
    tqdm = require("tqdm", "the progress bar").tqdm
    return tqdm(total=total, desc=label or "train", unit="step", mininterval=0.5,
                dynamic_ncols=True, leave=leave, position=position)


class RunBoard:
    """The parent's view of runs trained in worker processes.

    A run appears when it reports its first evaluation (queued runs do not count waiting time).
    On a terminal the running ones are a block of bar lines redrawn in place, and a finished run
    becomes one permanent result line above the block; the block is erased at the end, so the
    next output starts on a clean line. Otherwise each run prints a plain line every few seconds.
    """

    def __init__(self, total, labels, stream=None):
        self.total, self.labels = total, labels
        self.stream = stream if stream is not None else sys.stdout
        self.plain = not interactive()
        self.active, self.finished = {}, set()  # run -> its PlainProgress (its state on a tty)
        self.drawn, self.last_draw = 0, 0.0

    def report(self, i, step, loss, acc):
        if i in self.finished:
            return  # a late message of a run already finished
        started = i not in self.active
        if started:
            self.active[i] = PlainProgress(self.total, self.labels[i], stream=self.stream)
        run = self.active[i]
        if self.plain:
            run.update(step - run.n)  # prints a line every few seconds
        else:
            run.n = step
        if loss is not None:
            run.set_postfix(loss=f"{loss:.3f}", test_acc=f"{acc:.4f}")
        if not self.plain and (started or time.perf_counter() - self.last_draw > 0.2):
            self._draw()

    def finish(self, i, run):
        """Run ``i`` is done: its result line replaces its bar."""
        self.report(i, run["steps"][-1], run["train_loss"][-1], run["final_test_acc"])
        progress = self.active.pop(i)
        self.finished.add(i)
        if self.plain:
            progress.close()
        else:
            self._draw(f"{self.labels[i]}: {run['steps'][-1]:,} steps in {run['seconds']:.0f} s, "
                       f"test acc {run['final_test_acc']:.4f}")

    def close_all(self):
        """Done or interrupted: stop what is still open, leaving no bar behind."""
        for i in list(self.active):
            progress = self.active.pop(i)
            if self.plain:
                progress.close()
        if not self.plain:
            self._draw()

    def _draw(self, permanent=None):
        import shutil
        width = shutil.get_terminal_size().columns - 1
        # Back to the top of the block and erase it (ESC[nF: n lines up; ESC[J: to the end).
        text = (f"\x1b[{self.drawn}F" if self.drawn else "") + "\x1b[J"
        if permanent is not None:
            text += permanent[:width] + "\n"
        for run in self.active.values():
            text += _bar_line(run, width) + "\n"
        self.stream.write(text)
        self.stream.flush()
        self.drawn, self.last_draw = len(self.active), time.perf_counter()


def _bar_line(run, width):
    elapsed = time.perf_counter() - run.start
    done = run.n / max(run.total, 1)
    bar = "#" * round(20 * done) + "." * (20 - round(20 * done))
    rate = f", {run.n / elapsed:,.0f} steps/s" if elapsed > 0 and run.n else ""
    values = "".join(f", {k.replace('_', ' ')} {v}" for k, v in run.postfix.items())
    line = f"{run.label}: [{bar}] {run.n:,}/{run.total:,} {elapsed:.0f} s{rate}{values}"
    return line[:width]

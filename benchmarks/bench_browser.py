"""The desk grid in a real browser for minutes: its update rate and whether it falls behind.

Target (docs/benchmarks.md): with the reference book (40,000 positions) and the synthetic feed
(5,000 ticks/s), the grid updates at ≥ 5 Hz in the browser with no growing backlog over
10 minutes, on 2 cores.

The service runs; ``workbench dashboard`` (Voila) serves the desk notebook; headless Chromium
(``/usr/bin/chromium``, Playwright) shows it. In the page a MutationObserver counts the grid's
footer changes (one per update drawn: it carries the snapshot number); every 10 s the script
reads the number drawn and the service's latest snapshot number. The backlog is their
difference; it must not grow.

Run: ``python benchmarks/bench_browser.py [--minutes 10] [--positions 40000] [--rate 5000]``
"""

from __future__ import annotations

import itertools
import re
import statistics
import tempfile
import time
from pathlib import Path

from _reference import desk_in_browser, reference_service, service_parser

CHROMIUM = "/usr/bin/chromium"
_COUNTER = """() => {
  const foot = Array.from(document.querySelectorAll('.widget-html-content'))
    .find(e => /snapshot \\d+ · /.test(e.textContent));
  window.__wb = {changes: 0, last: foot.textContent};
  new MutationObserver(() => {
    if (foot.textContent !== window.__wb.last) {
      window.__wb.changes += 1; window.__wb.last = foot.textContent;
    }
  }).observe(foot, {subtree: true, childList: true, characterData: true});
}"""


def main() -> None:
    parser = service_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        svc, root, _ = reference_service(folder, "browse", positions=args.positions, rate=args.rate)
        try:
            with desk_in_browser(folder, root, "browse") as page:
                page.evaluate(_COUNTER)
                t0 = time.monotonic()
                samples: list[tuple[float, int, int, int]] = []  # t, changes, drawn, service
                end = t0 + args.minutes * 60.0
                while time.monotonic() < end:
                    page.wait_for_timeout(10_000)
                    state = page.evaluate("() => window.__wb")
                    drawn = int(re.search(r"snapshot (\d+)", state["last"]).group(1))  # type: ignore[union-attr]
                    latest = svc.latest(timeout_s=10).seq
                    samples.append((time.monotonic() - t0, state["changes"], drawn, latest))
            rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
            backlog = [s[3] - s[2] for s in samples]
            total_rate = samples[-1][1] / samples[-1][0]
            print(f"grid in the browser over {samples[-1][0] / 60:.1f} min: {total_rate:.2f} "
                  f"updates/s overall; per 10 s: median {statistics.median(rates):.2f}, "
                  f"min {min(rates):.2f}, max {max(rates):.2f}")  # fmt: skip
            third = max(len(backlog) // 3, 1)
            print(f"backlog (service snapshot − drawn snapshot): first third median "
                  f"{statistics.median(backlog[:third]):.0f}, last third median "
                  f"{statistics.median(backlog[-third:]):.0f}, max {max(backlog)}")  # fmt: skip
        finally:
            svc.stop()


if __name__ == "__main__":
    main()

"""FX forwards, FX options and equity options of a book under many scenarios at once.

The formulas are the live pricers' (:mod:`workbench.pricing.fx_book`,
:mod:`workbench.pricing.equity_book`), with every input carrying a scenario axis: forwards
and zero rates from each scenario's curves, each scenario's smile (FX, delta × expiry) or
surface (equity, moneyness × expiry) fitted from its own vol quotes, and the options of all
the scenarios of a block solved in one compiled call — scenario ``s``'s option ``i`` reads smile
``s · n_smiles + slot(i)`` — then priced in one vectorised Black call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from workbench._types import FloatArray, IntArray
from workbench.book.schema import Book
from workbench.market.model import MarketSnapshot
from workbench.market.schedules import spot_date, tenor_times, year_fractions_from
from workbench.pricing.black import black_price
from workbench.pricing.fx_book import _CALL_DELTA
from workbench.pricing.scenario_curves import SolvedCurves
from workbench.pricing.splines import PackedSplines, SplineCache
from workbench.pricing.surfaces import (
    EquityVolSurfaceModel,
    FxVolSurfaceModel,
    equity_vols,
    fx_smile_vols,
    surface_version,
)


def _cache(n_models: int) -> SplineCache:
    """A spline cache for one block's smiles (each fitted once, used once)."""
    return SplineCache(max_entries=max(256, 2 * n_models))


class _Group:
    """The rows of one underlying (an FX pair or an equity) and their static columns."""

    def __init__(self, book: Book, rows: IntArray, at: IntArray) -> None:
        self.rows = rows
        self.at = at  # where the rows sit in the class's row order
        self.notional = book.notional[rows]
        self.strike = book.strike[rows]
        self.sign = book.option_sign[rows]
        self.maturity = book.maturity[rows]


def _groups(book: Book, rows: IntArray) -> list[tuple[str, _Group]]:
    under = book.underlying.codes[rows]
    return [
        (
            book.underlying.labels[int(code)],
            _Group(book, rows[under == code], np.flatnonzero(under == code)),
        )
        for code in np.unique(under)
    ]


class ScenarioFx:
    """A book's FX forwards and options (rows ``rows``, ascending), priced per scenario block."""

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        self.as_of: date = market.as_of
        pairs = {p.pair: p for p in market.fx_pairs}
        surfaces = {s.pair: s for s in market.fx_vol_surfaces}
        option = (
            book.product.labels.index("FX_OPTION") if "FX_OPTION" in book.product.labels else -1
        )
        self._pairs = []
        for name, g in _groups(book, rows):
            pair, surf = pairs[name], surfaces.get(name)
            cal = market.calendars[pair.calendar]
            ts = year_fractions_from(
                market.as_of,
                np.array([spot_date(market.as_of, pair.spot_lag, cal)], "datetime64[D]"),
            )
            t = year_fractions_from(market.as_of, g.maturity)
            is_option = book.product.codes[g.rows] == option
            grid = None
            if is_option.any():
                assert surf is not None
                grid = (
                    np.array([[market.quote_index[q] for q in r] for r in surf.quotes], np.int64),
                    tenor_times(market.as_of, surf.expiries),
                    np.array([_CALL_DELTA[d] for d in surf.deltas], dtype=np.float64),
                )
            self._pairs.append(
                (name, g, is_option, np.concatenate([ts, t]), grid,
                 market.quote_index[pair.spot_quote],
                 market.discount_curve_id(pair.base_ccy),
                 market.discount_curve_id(pair.quote_ccy))
            )  # fmt: skip
        self._start: FloatArray | None = None

    def start_from(self, values: FloatArray, curves: SolvedCurves) -> None:
        """Start every later smile solve at the options' vols under ``values`` (one row of the
        market's quotes, today's) and its ``curves``: a scenario's vols lie near today's, so the
        Newton solve takes fewer steps than from the 0.5-delta vol (the root is the same, to
        ~1e-16)."""
        self._start = None
        self._start = self._priced(values[:1], curves)[1]

    def pv(self, values: FloatArray, curves: SolvedCurves) -> FloatArray:
        """PV per position (S × ``rows``), in the pair's quote currency."""
        return self._priced(values, curves)[0]

    def _priced(
        self, values: FloatArray, curves: SolvedCurves
    ) -> tuple[FloatArray, FloatArray | None]:
        """:meth:`pv` and the options' vols (S · options, None without options)."""
        n_s = values.shape[0]
        out = np.empty((n_s, self.rows.size))
        opts: list[_FxOptions] = []
        smiles: list[list[FxVolSurfaceModel]] = [[] for _ in range(n_s)]
        cache = _cache(n_s * len(self._pairs))
        for name, g, is_option, times, grid, spot_row, base_id, quote_id in self._pairs:
            lb = curves.log_discount(base_id, times)
            lq = curves.log_discount(quote_id, times)
            spot = values[:, spot_row][:, None]
            fwd = spot * np.exp(lb[:, 1:] - lb[:, :1] - lq[:, 1:] + lq[:, :1])
            df_q = np.exp(lq[:, 1:])
            out[:, g.at] = np.where(is_option, 0.0, g.notional * (fwd - g.strike) * df_q)
            if grid is None:
                continue
            rows, expiries, deltas = grid
            slot = len(smiles[0])
            for s in range(n_s):
                vols = values[s][rows]
                smiles[s].append(
                    FxVolSurfaceModel(
                        surface_id=name, version=surface_version(name, self.as_of, vols),
                        expiries=expiries, call_deltas=deltas, vols=vols, cache=cache,
                    )
                )  # fmt: skip
            t = times[1:][is_option]
            r_d = -lq[:, 1:][:, is_option] / t
            r_f = r_d - np.log(fwd[:, is_option] / spot) / t
            opts.append(
                _FxOptions(
                    at=g.at[is_option], slot=np.full(t.size, slot),
                    notional=g.notional[is_option], sign=g.sign[is_option],
                    strike=g.strike[is_option], t=t, spot=np.broadcast_to(spot, r_d.shape),
                    r_d=r_d, r_f=r_f,
                )
            )  # fmt: skip
        if not opts:
            return out, None
        return out, self._options(out, opts, smiles, self._start)

    @staticmethod
    def _options(
        out: FloatArray,
        opts: list[_FxOptions],
        smiles: list[list[FxVolSurfaceModel]],
        start: FloatArray | None,
    ) -> FloatArray:
        """Every option of every scenario in one smile solve (each started at ``start``, one vol
        per option of a scenario, if given) and one Black call; the vols (S · options)."""
        n_s, per = out.shape[0], len(smiles[0])

        def joined(name: str) -> FloatArray:
            """A static column of every pair's options, one row per scenario (S × options)."""
            column = np.concatenate([getattr(o, name) for o in opts])
            return np.broadcast_to(column, (n_s, column.size))

        def per_scenario(name: str) -> FloatArray:
            """A column that moves with the scenario (S × options)."""
            return np.concatenate([getattr(o, name) for o in opts], axis=1)

        at = np.concatenate([o.at for o in opts])
        which = (np.arange(n_s)[:, None] * per + joined("slot")).ravel().astype(np.int64)
        flat = [m for row in smiles for m in row]
        packed = PackedSplines.of([m.spline() for m in flat], [m.box() for m in flat])
        strike, t, sign = (joined(c).ravel() for c in ("strike", "t", "sign"))
        spot, r_d, r_f = (np.ascontiguousarray(per_scenario(c)).ravel()
                          for c in ("spot", "r_d", "r_f"))  # fmt: skip
        guess = None if start is None else np.tile(start, n_s)
        vol = fx_smile_vols(flat, which, spot, strike, t, r_d, r_f, packed=packed, guess=guess)
        price = black_price(sign, spot, strike, t, r_d, r_f, vol)
        out[:, at] = np.concatenate([o.notional for o in opts]) * price.reshape(n_s, at.size)
        return vol


@dataclass(frozen=True)
class _FxOptions:
    """One pair's options in a block: where they sit in the class's rows (``at``), their smile
    slot in a scenario's smiles, static columns (``notional``, ``sign``, ``strike``, expiry
    ``t`` in years) and, per scenario (S × options), ``spot``, ``r_d`` and ``r_f``
    (continuous, decimal per year)."""

    at: IntArray
    slot: IntArray
    notional: FloatArray
    sign: FloatArray
    strike: FloatArray
    t: FloatArray
    spot: FloatArray
    r_d: FloatArray
    r_f: FloatArray


class ScenarioEquity:
    """A book's equity options (rows ``rows``, ascending), priced per scenario block."""

    def __init__(self, book: Book, rows: IntArray, market: MarketSnapshot) -> None:
        self.rows = rows
        self.as_of: date = market.as_of
        specs = {e.id: e for e in market.equities}
        self._names: list[str] = []
        parts: list[tuple[_Group, FloatArray]] = []
        self._grids = []
        for name, g in _groups(book, rows):
            spec = specs[name]
            self._names.append(name)
            parts.append((g, year_fractions_from(market.as_of, g.maturity)))
            self._grids.append(
                (
                    np.array([[market.quote_index[q] for q in r] for r in spec.vol_quotes]),
                    tenor_times(market.as_of, spec.vol_expiries),
                    np.asarray(spec.vol_moneyness, dtype=np.float64),
                )
            )
        sizes = [g.rows.size for g, _ in parts]
        self._at = np.concatenate([g.at for g, _ in parts])
        self._notional = np.concatenate([g.notional for g, _ in parts])
        self._strike = np.concatenate([g.strike for g, _ in parts])
        self._sign = np.concatenate([g.sign for g, _ in parts])
        self._t = np.concatenate([t for _, t in parts])
        self._spot_row = np.repeat([market.quote_index[specs[n].spot_quote] for n in self._names],
                                   sizes)  # fmt: skip
        self._q = np.repeat([specs[n].dividend_yield for n in self._names], sizes)
        self._curve = np.repeat([market.discount_curve_id(specs[n].currency) for n in self._names],
                                sizes)  # fmt: skip
        self._slot = np.repeat(np.arange(len(self._names), dtype=np.int64), sizes)

    def pv(self, values: FloatArray, curves: SolvedCurves) -> FloatArray:
        """PV per option (S × ``rows``), in the option's currency."""
        n_s, n = values.shape[0], self._t.size
        log_df = np.empty((n_s, n))
        for curve_id in dict.fromkeys(self._curve.tolist()):
            hit = self._curve == curve_id
            log_df[:, hit] = curves.log_discount(curve_id, self._t[hit])
        r = -log_df / self._t
        cache = _cache(n_s * len(self._names))
        surfaces = [
            EquityVolSurfaceModel(
                surface_id=name, version=surface_version(name, self.as_of, vols),
                expiries=expiries, moneyness=moneyness, vols=vols, cache=cache,
            )
            for s in range(n_s)
            for name, (rows, expiries, moneyness) in zip(self._names, self._grids, strict=True)
            for vols in (values[s][rows],)
        ]  # fmt: skip
        which = (np.arange(n_s)[:, None] * len(self._names) + self._slot[None, :]).ravel()
        spot = values[:, self._spot_row]
        tiled = [np.broadcast_to(x, (n_s, n)).ravel() for x in (self._strike, self._t, self._q,
                                                                 self._sign)]  # fmt: skip
        strike, t, q, sign = tiled
        vol = equity_vols(surfaces, which, spot.ravel(), strike, t)
        price = black_price(sign, spot.ravel(), strike, t, r.ravel(), q, vol)
        out = np.empty((n_s, n))
        out[:, self._at] = self._notional * price.reshape(n_s, n)
        return out


__all__ = ["ScenarioEquity", "ScenarioFx"]

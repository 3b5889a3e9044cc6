"""Tenors, business-day adjustment, day counts and coupon schedules.

Dates come only from these functions and an explicit as-of date, never from the wall clock.
Arrays of dates are ``datetime64[D]``; scalar dates are :class:`datetime.date`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np

from workbench._types import DAYS_PER_YEAR, DateArray, FloatArray, IntArray
from workbench.market.model import BusinessDayConvention, Calendar, DayCount

_TENOR = re.compile(r"^(\d+)([DWMY])$")


def parse_tenor(tenor: str) -> tuple[int, str]:
    """``"5Y"`` → ``(5, "Y")``; ``"ON"`` is one day. Raises ValueError naming a bad tenor."""
    text = tenor.strip().upper()
    if text in ("ON", "O/N"):
        return 1, "D"
    match = _TENOR.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"bad tenor {tenor!r}: expected ON or a count and D, W, M or Y ('6M')")
    return int(match.group(1)), match.group(2)


def add_months(d: date, months: int) -> date:
    """``d`` plus ``months`` calendar months, the day clipped to the month's end."""
    total = d.year * 12 + (d.month - 1) + months
    year, month0 = divmod(total, 12)
    last = _month_end(year, month0 + 1)
    return date(year, month0 + 1, min(d.day, last))


def _month_end(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def add_months_array(dates: DateArray, months: IntArray) -> DateArray:
    """``datetime64[D]`` dates plus whole calendar months each, the day clipped to the target
    month's end (:func:`add_months` over arrays)."""
    m = dates.astype("datetime64[M]")
    day = (dates - m.astype("datetime64[D]")).astype(np.int64)
    target = m + months.astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    out: DateArray = first + np.minimum(day, length - 1).astype("timedelta64[D]")
    return out


def add_tenor(d: date, tenor: str) -> date:
    """``d`` plus a tenor in calendar terms (no business-day adjustment)."""
    n, unit = parse_tenor(tenor)
    if unit == "D":
        return d + timedelta(days=n)
    if unit == "W":
        return d + timedelta(weeks=n)
    return add_months(d, n if unit == "M" else 12 * n)


_HOLIDAY_ARRAYS: dict[int, tuple[Calendar, np.ndarray]] = {}


def _holidays(calendar: Calendar) -> np.ndarray:
    """The calendar's holidays as a sorted ``datetime64[D]`` array, converted once per calendar."""
    hit = _HOLIDAY_ARRAYS.get(id(calendar))
    if hit is not None and hit[0] is calendar:
        return hit[1]
    arr = np.array(sorted(calendar.holidays), dtype="datetime64[D]")
    if len(_HOLIDAY_ARRAYS) > 256:
        _HOLIDAY_ARRAYS.clear()
    _HOLIDAY_ARRAYS[id(calendar)] = (calendar, arr)
    return arr


def adjust_array(
    dates: DateArray, calendar: Calendar, convention: BusinessDayConvention
) -> DateArray:
    """Business-day adjust many dates: F following, MF modified following, P preceding, U none."""
    d = np.asarray(dates, dtype="datetime64[D]")
    if convention == "U":
        return d
    mask, hols = calendar.weekmask(), _holidays(calendar)
    back: DateArray = np.busday_offset(d, 0, roll="backward", weekmask=mask, holidays=hols)
    if convention == "P":
        return back
    fwd: DateArray = np.busday_offset(d, 0, roll="forward", weekmask=mask, holidays=hols)
    if convention == "F":
        return fwd
    month = d.astype("datetime64[M]")
    return np.where(fwd.astype("datetime64[M]") != month, back, fwd)


def adjust(d: date, calendar: Calendar, convention: BusinessDayConvention) -> date:
    """Business-day adjust one date."""
    out = adjust_array(np.array([d], dtype="datetime64[D]"), calendar, convention)[0]
    return out.astype(date)  # type: ignore[no-any-return]


def is_business_day(d: date, calendar: Calendar) -> bool:
    """Whether ``d`` is a business day of ``calendar``."""
    return bool(
        np.is_busday(
            np.datetime64(d, "D"), weekmask=calendar.weekmask(), holidays=_holidays(calendar)
        )
    )


def add_business_days(d: date, n: int, calendar: Calendar) -> date:
    """``d`` rolled forward to a business day, then ``n`` business days later."""
    out = np.busday_offset(
        np.datetime64(d, "D"),
        n,
        roll="forward",
        weekmask=calendar.weekmask(),
        holidays=_holidays(calendar),
    )
    return out.astype(date)  # type: ignore[no-any-return]


def spot_date(as_of: date, lag: int, calendar: Calendar) -> date:
    """The spot date: ``lag`` business days after ``as_of`` (``as_of`` itself rolled if needed)."""
    return add_business_days(as_of, lag, calendar)


def tenor_years(tenor: str) -> float:
    """A tenor (``1W``, ``3M``, ``10Y``) in years: days / 365, weeks · 7 / 365, months / 12."""
    n, unit = parse_tenor(tenor)
    return {"D": n / 365.0, "W": 7 * n / 365.0, "M": n / 12.0, "Y": float(n)}[unit]


def tenor_days(tenor: str) -> float:
    """A tenor's mean length in calendar days (a month 365.25 / 12 days, a year 365.25): the
    measure tenors are ordered by (``52W`` < ``1Y``, ``365D`` < ``1Y``, ``12M`` = ``1Y``)."""
    n, unit = parse_tenor(tenor)
    return n * {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}[unit]


def year_fraction(start: DateArray, end: DateArray, day_count: DayCount) -> FloatArray:
    """Accrual year fractions between date arrays.

    ``ACT/360`` and ``ACT/365F`` count actual days; ``30/360`` is the bond basis (ISDA 2006
    §4.16(f) "30/360", QuantLib ``Thirty360.BondBasis``; not QuantLib's ``ISDA``, which is
    30E/360 ISDA): a 31st start becomes the 30th, a 31st end becomes the 30th when the start is
    the 30th or 31st.
    """
    s = np.asarray(start, dtype="datetime64[D]")
    e = np.asarray(end, dtype="datetime64[D]")
    if day_count == "ACT/360":
        out: FloatArray = (e - s).astype(np.int64).astype(np.float64) / 360.0
        return out
    if day_count == "ACT/365F":
        out = (e - s).astype(np.int64).astype(np.float64) / 365.0
        return out
    if day_count == "30/360":
        y1, m1, d1 = _ymd(s)
        y2, m2, d2 = _ymd(e)
        d1 = np.minimum(d1, 30)
        d2 = np.where((d2 == 31) & (d1 >= 30), 30, d2)
        days = 360 * (y2 - y1) + 30 * (m2 - m1) + (d2 - d1)
        out = days.astype(np.float64) / 360.0
        return out
    raise ValueError(f"unknown day count {day_count!r}: expected ACT/360, ACT/365F or 30/360")


def _ymd(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    months = d.astype("datetime64[M]")
    years = months.astype("datetime64[Y]")
    y = years.astype(np.int64) + 1970
    m = (months - years).astype(np.int64) + 1
    dd = (d - months).astype(np.int64) + 1
    return y, m, dd


def schedule(
    start: date,
    end: date,
    months: int,
    calendar: Calendar,
    convention: BusinessDayConvention = "MF",
) -> DateArray:
    """Adjusted period boundaries from ``start`` to ``end`` every ``months``.

    Generated backward from ``end`` (a short front stub if the term is not a whole number of
    periods), unadjusted dates rolled by ``convention``; the first entry is ``start`` adjusted,
    the last ``end`` adjusted. Matches QuantLib's ``DateGeneration.Backward``.
    """
    if end <= start:
        raise ValueError(f"schedule end {end} is not after start {start}")
    if months <= 0:
        raise ValueError(f"schedule frequency must be a positive number of months, not {months}")
    dates = [end]
    k = 1
    while True:
        d = add_months(end, -months * k)
        if d <= start:
            break
        dates.append(d)
        k += 1
    dates.append(start)
    raw = np.array(dates[::-1], dtype="datetime64[D]")
    return adjust_array(raw, calendar, convention)


def year_fractions_from(as_of: date | np.datetime64, dates: DateArray) -> FloatArray:
    """ACT/365F year fractions of dates from ``as_of`` (curve and option time, in years;
    negative before ``as_of``)."""
    d = np.asarray(dates, dtype="datetime64[D]")
    origin = (
        as_of.astype("datetime64[D]")
        if isinstance(as_of, np.datetime64)
        else np.datetime64(as_of, "D")
    )
    return (d - origin).astype(np.int64).astype(np.float64) / DAYS_PER_YEAR


def tenor_times(as_of: date, tenors: Sequence[str]) -> FloatArray:
    """ACT/365F times (years) of the dates ``tenors`` (``1M``, ``2Y`` …) after ``as_of``, with
    no business-day adjustment."""
    dates = np.array([add_tenor(as_of, tenor) for tenor in tenors], dtype="datetime64[D]")
    return year_fractions_from(as_of, dates)

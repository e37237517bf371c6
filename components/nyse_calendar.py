"""The NYSE trading calendar, 1962-12-03 .. 1986-12-31: the weekdays the exchange was closed.

Derived from `flows/data/NYSE.csv` (ISLP 0.6.0; provenance in `flows/data/README.md`), which has
one row for every trading day of the period: a weekday of the period without a row is a day the
exchange was closed (holidays, the 1968 paperwork-crisis Wednesdays, days of national mourning).
It is kept apart from the CSV so that a source missing a day is caught; no calendar library
covers the period (exchange_calendars' XNYS counts 61 of these closures as sessions, 1962-12-25
among them).
It is code, not a data file, so it travels in the code bundle of every step and host task that
uses it (a KFP host task has no project folder) and is part of their code fingerprint. Checked
against the CSV by tests/unit/test_components_nyse.py.
"""

from datetime import date

FIRST = date(1962, 12, 3)
LAST = date(1986, 12, 31)

# year: "MM-DD ..." of the weekdays the exchange was closed
_CLOSED_BY_YEAR = {
    1962: "12-25",
    1963: "01-01 02-22 04-12 05-30 07-04 09-02 11-05 11-25 11-28 12-25",
    1964: "01-01 02-21 03-27 05-29 07-03 09-07 11-03 11-26 12-25",
    1965: "01-01 02-22 04-16 05-31 07-05 09-06 11-02 11-25 12-24",
    1966: "02-22 04-08 05-30 07-04 09-05 11-08 11-24 12-26",
    1967: "01-02 02-22 03-24 05-30 07-04 09-04 11-07 11-23 12-25",
    1968: (
        "01-01 02-12 02-22 04-09 04-12 05-30 06-12 06-19 06-26 07-04 07-05 07-10 "
        "07-17 07-24 07-31 08-07 08-14 08-21 08-28 09-02 09-11 09-18 09-25 10-02 "
        "10-09 10-16 10-23 10-30 11-05 11-11 11-20 11-28 12-04 12-11 12-18 12-25"
    ),
    1969: "01-01 02-10 02-21 03-31 04-04 05-30 07-04 07-21 09-01 11-27 12-25",
    1970: "01-01 02-23 03-27 07-03 09-07 11-26 12-25",
    1971: "01-01 02-15 04-09 05-31 07-05 09-06 11-25 12-24",
    1972: "02-21 03-31 05-29 07-04 09-04 11-07 11-23 12-25 12-28",
    1973: "01-01 01-25 02-19 04-20 05-28 07-04 09-03 11-22 12-25",
    1974: "01-01 02-18 04-12 05-27 07-04 09-02 11-28 12-25",
    1975: "01-01 02-17 03-28 05-26 07-04 09-01 11-27 12-25",
    1976: "01-01 02-16 04-16 05-31 07-05 09-06 11-02 11-25 12-24",
    1977: "02-21 04-08 05-30 07-04 07-14 09-05 11-24 12-26",
    1978: "01-02 02-20 03-24 05-29 07-04 09-04 11-23 12-25",
    1979: "01-01 02-19 04-13 05-28 07-04 09-03 11-22 12-25",
    1980: "01-01 02-18 04-04 05-26 07-04 09-01 11-04 11-27 12-25",
    1981: "01-01 02-16 04-17 05-25 07-03 09-07 11-26 12-25",
    1982: "01-01 02-15 04-09 05-31 07-05 09-06 11-25 12-24",
    1983: "02-21 04-01 05-30 07-04 09-05 11-24 12-26",
    1984: "01-02 02-20 04-20 05-28 07-04 09-03 11-22 12-25",
    1985: "01-01 02-18 04-05 05-27 07-04 09-02 09-27 11-28 12-25",
    1986: "01-01 02-17 03-28 05-26 07-04 09-01 11-27 12-25",
}

CLOSED = frozenset(
    date(year, int(day[:2]), int(day[3:]))
    for year, days in _CLOSED_BY_YEAR.items()
    for day in days.split()
)

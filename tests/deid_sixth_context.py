"""One note's drawing context for the sixth set: planted values and unplanted clinical look-alikes.

Each method returns a planted `P`/`Frag` or, for the look-alikes, a plain `str` that must stay
unplanted: doses, lab values, vital signs, pain scores, vertebral levels, room and bed numbers, codes,
scores and eponymous diseases, which a de-identifier should leave alone.
"""

from __future__ import annotations

import random

from tests import deid_sixth_formats as fmt
from tests import deid_sixth_pools as pools
from tests.deid_sixth_formats import Frag, P, Value, fill

EPONYMS = (
    "Parkinson disease", "Hashimoto thyroiditis", "Crohn's disease", "Alzheimer dementia", "Bell's palsy",
    "Graves disease", "Cushing syndrome", "Barrett esophagus", "Guillain-Barré syndrome", "Wilson disease",
    "Hodgkin lymphoma", "Addison disease", "Raynaud phenomenon", "Sjögren syndrome", "Meniere disease",
    "Down syndrome", "Dupuytren contracture", "Osgood-Schlatter", "Kawasaki disease", "Huntington disease",
)  # fmt: skip
SIGNS = ("Murphy sign negative", "McBurney point nontender", "Babinski downgoing", "Homans sign negative",
         "Kernig negative", "Romberg positive", "Tinel sign positive at the wrist", "Phalen negative")  # fmt: skip
MEDS = (
    "metoprolol tartrate 25 mg PO BID", "apixaban (Eliquis) 5 mg bid", "insulin glargine 22 units qHS",
    "furosemide 40 mg IV x1", "lisinopril 10mg daily", "atorvastatin 80 mg nightly", "levothyroxine 88 mcg qAM",
    "carbidopa-levodopa 25/100 TID", "oxycodone 5 mg q4h PRN pain", "vancomycin 1250 mg IV q12h",
    "ondansetron 4 mg ODT q8h prn", "sertraline 50 mg", "heparin 5,000 units SQ q8h", "Lasix 20 mg",
    "prednisone 40 mg x 5 days", "tamsulosin 0.4 mg", "KCl 20 mEq PO x2", "magnesium sulfate 2 g IV",
)  # fmt: skip
CODES = ("ICD-10 I48.91", "ICD-10 E11.65", "CPT 99214", "CPT 93000", "NDC 0002-8215-01", "LOINC 2345-7",
         "DRG 291", "HCPCS E0601", "ICD-10 J44.1", "CPT 71046")  # fmt: skip
SCORES = ("GCS 14", "NIHSS 3", "Braden 16", "Morse fall score 45", "CHA2DS2-VASc 4", "PHQ-9 12", "MELD 18",
          "Apgar 8/9", "Gleason 3+4=7", "Wells score 1.5", "CURB-65 of 2", "ASA III", "RASS -1", "CIWA 8",
          "Mallampati II", "MMSE 21/30", "ECOG 2", "Child-Pugh B")  # fmt: skip
LEVELS = ("L4-L5", "C5-6", "T12", "L5-S1", "C2", "T4-T6", "S1", "L3")
STATES = ("WI", "ID", "NC", "MN", "NM", "LA", "MI", "KY", "WA", "MS", "Wisconsin", "Texas", "Ohio")


class NoteContext:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.origins: set[str] = set()

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, *options: str) -> str:
        return self.rng.choice(options)

    def maybe(self, p: float, template: str, values: dict[str, Value] | None = None) -> Frag:
        return fill(template, values or {}) if self.chance(p) else Frag("")

    # ---------------------------------------------------------- people
    def person(self) -> pools.Person:
        p = pools.person(self.rng)
        self.origins.add(p.origin)
        return p

    def name(self, p: pools.Person) -> P:
        return P(pools.full_name(self.rng, p), "NAME")

    def typed(self, p: pools.Person) -> P:
        return P(pools.typed_name(self.rng, p), "NAME")

    def sur(self, p: pools.Person) -> P:
        return P(pools.short_name(self.rng, p), "NAME")

    def given(self, p: pools.Person) -> P:
        return P(p.given, "NAME")

    def clinician(self, p: pools.Person | None = None) -> Frag:
        """A clinician as signed or referred to; the title and credential are not planted."""
        p = p or self.person()
        credential = self.rng.choice(pools.CREDENTIALS)
        style = self.rng.randrange(6)
        if style == 0:
            return fill("Dr. {n}", {"n": self.sur(p)})
        if style == 1:
            return fill("{n}, {c}", {"n": self.name(p), "c": credential})
        if style == 2:
            return fill("{n} {c}", {"n": P(f"{p.given} {p.surname}", "NAME"), "c": credential})
        if style == 3:
            initials = f"{p.given[0]}{p.surname[0]}"
            return fill("{n} ({i})", {"n": P(f"{p.given[0]}. {p.surname}", "NAME"), "i": P(initials, "NAME")})
        if style == 4:
            return fill("Dr {n}", {"n": P(f"{p.given} {p.surname}", "NAME")})
        return fill("{n}, {c}", {"n": P(f"{p.surname.upper()}, {p.given.upper()}", "NAME"), "c": credential})

    # ---------------------------------------------------------- places
    def facility(self) -> P:
        return P(fmt.facility(self.rng), "FACILITY")

    def city(self) -> tuple[P, str]:
        city, state = self.rng.choice(pools.CITIES)
        return P(city, "CITY"), state

    def address(self, *, one_line: bool = False) -> Frag:
        city, state = self.city()
        line1: Value = (
            P(fmt.po_box(self.rng), "PO_BOX")
            if self.chance(0.3)
            else P(fmt.street(self.rng), "STREET_ADDRESS")
        )
        sep = ", " if one_line else "\n"
        return fill(
            "{l1}" + sep + "{city}, {st} {zip}",
            {"l1": line1, "city": city, "st": state, "zip": P(fmt.zip_code(self.rng), "ZIP")},
        )

    # ---------------------------------------------------------- dates and ages
    def date(self) -> Frag:
        """A date; now and then after a weekday, which is not planted (it names no single day)."""
        value = P(fmt.date(self.rng), "DATE")
        if self.chance(0.08):
            return fill("{w} {d}", {"w": self.rng.choice(pools.WEEKDAYS), "d": value})
        return fill("{d}", {"d": value})

    def dob(self) -> P:
        return P(fmt.dob(self.rng), "DATE")

    def age(self) -> Frag:
        """An age: over 89 it is planted (Safe Harbor), under 90 it is filler."""
        if self.chance(0.45):
            return fill("{a}", {"a": P(fmt.old_age(self.rng), "AGE_OVER_89")})
        return Frag(str(self.rng.randint(19, 89)))

    def age_phrase(self) -> Frag:
        unit = self.pick("-year-old", " y/o", " yo", " year old", "yo", " YO", "-yr-old")
        return fill("{a}{u}", {"a": self.age(), "u": unit})

    # ---------------------------------------------------------- numbers
    def phone(self) -> Frag:
        """A phone number; an extension after it is not planted (alone it reaches no one)."""
        value = P(fmt.phone(self.rng), "PHONE")
        if self.chance(0.1):
            return fill(
                "{p} {x}{e}",
                {"p": value, "x": self.pick("x", "ext ", "ext. "), "e": str(self.rng.randint(100, 9999))},
            )
        return fill("{p}", {"p": value})

    def fax(self) -> P:
        return P(fmt.phone(self.rng), "FAX")

    def email(self, p: pools.Person, *, clinician: bool = False) -> P:
        return P(fmt.email(self.rng, p, clinician=clinician), "EMAIL")

    def ssn(self) -> Frag:
        return fmt.ssn_field(self.rng)

    def mrn(self) -> P:
        return P(fmt.mrn(self.rng), "MRN")

    def account(self) -> P:
        return P(fmt.account(self.rng), "ACCOUNT")

    def plan(self) -> P:
        return P(fmt.health_plan(self.rng), "HEALTH_PLAN")

    def licence(self) -> Frag:
        label, number = fmt.licence(self.rng)
        return fill("{l} {n}", {"l": label, "n": P(number, "LICENCE")})

    def driver_licence(self) -> Frag:
        state = self.rng.choice(STATES[:10])
        number = f"{fmt.letters(self.rng, 1)}{fmt.digits(self.rng, 3)}-{fmt.digits(self.rng, 4)}-{fmt.digits(self.rng, 4)}"
        return fill("{st} driver's license {n}", {"st": state, "n": P(number, "LICENCE")})

    def device(self) -> Frag:
        kind = self.rng.choice(pools.DEVICE_KINDS)
        maker = self.rng.choice(pools.DEVICE_MAKERS)
        label = self.pick("serial #", "S/N:", "SN", "serial number", "Serial No.", "device ID")
        return fill(
            "{m} {k}, {l} {s}",
            {"m": maker, "k": kind, "l": label, "s": P(fmt.device_serial(self.rng), "DEVICE")},
        )

    def vehicle(self) -> Frag:
        if self.chance(0.3):
            return fill("VIN {v}", {"v": P(fmt.vin(self.rng), "VEHICLE")})
        state = self.rng.choice(STATES[:10])
        label = self.pick("plate", "lic plate", "license plate", "tag", "plates")
        return fill("{veh}, {st} {l} {v}", {
            "veh": self.rng.choice(pools.VEHICLES), "st": state, "l": label, "v": P(fmt.plate(self.rng), "VEHICLE"),
        })  # fmt: skip

    def url(self, p: pools.Person) -> P:
        return P(fmt.url(self.rng, p), "URL")

    def ip(self) -> P:
        return P(fmt.ip_address(self.rng), "IP_ADDRESS")

    # ---------------------------------------------------------- unplanted look-alikes
    def vitals(self) -> str:
        r = self.rng
        return (
            f"BP {r.randint(92, 188)}/{r.randint(48, 104)}, HR {r.randint(48, 131)}, RR {r.randint(12, 28)}, "
            f"T {r.randint(965, 1029) / 10:.1f}F, SpO2 {r.randint(86, 100)}% on {self.pick('RA', '2L NC', '4 L', 'room air')}"
        )

    def labs(self) -> str:
        r = self.rng
        return (
            f"Na {r.randint(128, 146)}, K {r.randint(30, 58) / 10:.1f}, Cr {r.randint(6, 34) / 10:.1f}, "
            f"Hgb {r.randint(68, 162) / 10:.1f}, WBC {r.randint(30, 220) / 10:.1f}, plt {r.randint(48, 460)}, "
            f"INR {r.randint(9, 38) / 10:.1f}, A1c {r.randint(52, 121) / 10:.1f}%"
        )

    def pain(self) -> str:
        return f"pain {self.rng.randint(0, 10)}/10"

    def room(self) -> str:
        r = self.rng
        return self.pick(
            f"Rm {r.randint(100, 999)}{r.choice('AB')}",
            f"bed {r.randint(1, 40)}",
            f"room {r.randint(2, 12)}{r.randint(10, 60)}",
            f"Bay {r.randint(1, 24)}",
        )

    def med(self) -> str:
        return self.rng.choice(MEDS)

    def eponym(self) -> str:
        return self.rng.choice(EPONYMS)

    def code(self) -> str:
        return self.rng.choice(CODES)

    def score(self) -> str:
        return self.rng.choice(SCORES)

    def level(self) -> str:
        return self.rng.choice(LEVELS)

    def year(self) -> str:
        """A bare year: not planted (Safe Harbor removes it only as part of a date)."""
        return str(self.rng.randint(1978, 2025))

    def time(self) -> str:
        r = self.rng
        return self.pick(
            f"{r.randint(0, 23):02d}{r.choice(('00', '15', '30', '45'))}",
            f"{r.randint(1, 12)}:{r.randint(0, 59):02d} {r.choice(('am', 'pm', 'AM', 'PM'))}",
        )

    def filler(self) -> str:
        """One clinical sentence full of numbers and proper nouns that are not identifiers."""
        r = self.rng
        return r.choice(
            (
                f"Hx of {self.eponym()} since {self.year()}; on {self.med()}.",
                f"MRI shows disc protrusion at {self.level()} with mild foraminal narrowing.",
                f"{self.score()}; {self.pain()}; {self.vitals()}.",
                f"Labs: {self.labs()}.",
                f"Moved to {self.room()} for telemetry; {self.code()}.",
                f"EF {r.randint(20, 65)}%, titer 1:{r.choice((40, 80, 160, 320))}, {r.randint(2, 7)} day course planned.",
                f"{r.choice(SIGNS)}. Foley {r.choice((14, 16, 18))} Fr placed, {r.randint(150, 900)} mL out.",
                f"Stage {r.randint(1, 4)} pressure injury, {r.randint(1, 6)} x {r.randint(1, 6)} cm, POD #{r.randint(1, 9)}.",
                f"Patient's {self.age_under()} yo spouse at bedside. s/p CABG {self.year()}.",
            )
        )

    def age_under(self) -> str:
        return str(self.rng.randint(21, 88))

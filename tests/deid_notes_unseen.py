"""A fourth set of synthetic clinical notes, written without reading the de-identifier or the other sets.

The de-identifier was tuned on three note sets, each of which it failed before tuning; this set exists to
measure it on notes nobody tuned it against. Every note is assembled from literal text and planted
identifiers, so the exact character span of each identifier is known by construction rather than found
by searching the text. Clinical look-alikes (eponyms, doses, vital signs, scores, codes, ages under 90,
bare years) are written as literal text: a de-identifier that removes them loses precision.

Kinds follow the HIPAA Safe Harbor identifiers that occur in free text: NAME (patients, relatives,
clinicians), FACILITY (hospitals, clinics, nursing homes), STREET_ADDRESS, PO_BOX, CITY, ZIP (each its
own span; the state is kept), DATE, AGE_OVER_89, PHONE, FAX, EMAIL, SSN, MRN, ACCOUNT, HEALTH_PLAN,
LICENCE, DEVICE, VEHICLE, URL and IP_ADDRESS.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

UNSEEN_SEED = 42024
UNSEEN_NOTE_COUNT = 220

KINDS = (
    "NAME", "FACILITY", "STREET_ADDRESS", "PO_BOX", "CITY", "ZIP", "DATE", "AGE_OVER_89", "PHONE", "FAX",
    "EMAIL", "SSN", "MRN", "ACCOUNT", "HEALTH_PLAN", "LICENCE", "DEVICE", "VEHICLE", "URL", "IP_ADDRESS",
)  # fmt: skip


@dataclass(frozen=True)
class PlantedSpan:
    start: int
    end: int
    kind: str
    text: str


@dataclass(frozen=True)
class UnseenNote:
    genre: str
    text: str
    spans: tuple[PlantedSpan, ...]


class _NoteBuilder:
    """Concatenates literal text and planted identifiers, recording each identifier's span as it goes."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._spans: list[PlantedSpan] = []

    def text(self, literal: str) -> _NoteBuilder:
        self._parts.append(literal)
        self._length += len(literal)
        return self

    def phi(self, kind: str, value: str) -> _NoteBuilder:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self._spans.append(PlantedSpan(self._length, self._length + len(value), kind, value))
        return self.text(value)

    def build(self, genre: str) -> UnseenNote:
        return UnseenNote(genre, "".join(self._parts), tuple(self._spans))


# --- pools: names from many origins, places, facilities -----------------------------------------------

GIVEN = (
    "Oluwaseun", "Chidinma", "Kwame", "Ama", "Abebe", "Tsion", "Fatuma", "Hamza", "Yusuf", "Leila", "Mehmet",
    "Elif", "Dmitri", "Svetlana", "Bogdan", "Agnieszka", "Wojciech", "Siobhan", "Padraig", "Niamh", "Eleni",
    "Stavros", "Giuseppe", "Chiara", "Joaquín", "Ximena", "Guadalupe", "Rafael", "Thanh", "Huong", "Minh",
    "Ji-woo", "Seo-yeon", "Haruto", "Yui", "Wei", "Xiaoling", "Jun", "Anjali", "Rohan", "Lakshmi",
    "Venkatesh", "Gurpreet", "Farhan", "Nasrin", "Bilal", "Ayesha", "Kalani", "Keoni", "Tala", "Marisol",
    "Dwayne", "Latoya", "Tremaine", "Brooke", "Caleb", "Harold", "Doris", "Mildred", "Eugene", "Hope",
    "Grant", "Rose", "Faith", "Sunny", "Ingrid", "Lars", "Astrid", "Bjorn", "Aino", "Pekka", "Zsofia",
    "Tamás", "Ngozi", "Chukwuemeka", "Adaeze", "Sipho", "Thandiwe", "Ahmad", "Zahra", "Reza", "Shirin",
    "Moshe", "Yael", "Amara", "Rangi", "Aroha", "Paulo", "Ioana",
)  # fmt: skip
SURNAMES = (
    "Adeyemi", "Okonkwo", "Mensah", "Boateng", "Tesfaye", "Haile", "Warsame", "Abdi", "Haddad", "Khoury",
    "Yilmaz", "Demir", "Volkov", "Kuznetsova", "Kowalczyk", "Wiśniewska", "Ní Bhriain", "O'Sullivan",
    "McAllister", "Papadopoulos", "Georgiou", "Esposito", "Bianchi", "de la Cruz", "Villanueva",
    "Ramírez-Ortega", "Nguyen", "Tran", "Pham", "Kim", "Park", "Tanaka", "Watanabe", "Zhang", "Liu", "Chen",
    "Raghunathan", "Subramaniam", "Chatterjee", "Sandhu", "Qureshi", "Siddiqui", "Kahananui", "Makoa",
    "Fonoti", "Washington", "Jefferson", "Baker", "Fisher", "Carpenter", "Young", "Whitfield", "Lindqvist",
    "Johansson", "Virtanen", "Nagy", "Horváth", "Eze", "Nwosu", "Dlamini", "Ndlovu", "Rahimi", "Hosseini",
    "Goldberg", "Ben-David", "Van der Berg", "St. Pierre", "Brown", "Moreau", "Schmidt-Hauser", "Popescu",
    "Hakimi", "Tuilagi", "Lee", "Said",
)  # fmt: skip
MIDDLE_INITIALS = "ABCDEFGHJKLMNPRSTW"
CITIES = (
    "Dorchester", "Worcester", "Lowell", "Fall River", "Cicero", "Skokie", "Hialeah", "Kissimmee", "Yakima",
    "Spokane", "Bakersfield", "Modesto", "Dearborn", "Flint", "Paterson", "Camden", "Lawrence", "Brockton",
    "Chula Vista", "El Cajon", "Tacoma", "Gresham", "Pueblo", "Greeley", "Laredo", "Odessa", "Hilo",
    "Kaneohe", "Bangor", "Lewiston", "Burlington", "Rutland", "Scranton", "Altoona", "Dothan",
)  # fmt: skip
STATES = (
    "MA", "IL", "FL", "WA", "CA", "MI", "NJ", "CO", "TX", "HI", "ME", "VT", "PA", "AL",
)  # fmt: skip
STREET_NAMES = (
    "Maple", "Elm", "Washington", "Martin Luther King Jr", "Old Post", "Cedar Ridge", "Kamehameha",
    "Calle del Sol", "Birchwood", "Orchard", "Industrial", "Pleasant", "Harborview", "Quarry", "Linden",
)  # fmt: skip
STREET_TYPES = (
    "Street", "St.", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Blvd.", "Lane", "Ct", "Drive", "Way",
)  # fmt: skip
HOSPITALS = (
    "Beth Israel Deaconess Medical Center", "Brigham and Women's Hospital", "Cedars-Sinai", "Sloan Kettering",
    "Grady Memorial Hospital", "Parkland", "Bellevue", "Hennepin Healthcare", "Mercy General Hospital",
    "St. Vincent's Medical Center", "Our Lady of Lourdes Hospital", "Providence Sacred Heart",
    "Queen's Medical Center", "Maine Medical Center", "Baystate Medical Center",
    "Lakeside Regional Medical Center", "Good Samaritan Hospital", "Christiana Care", "Mount Sinai Queens",
    "Shriners Children's", "Rush University Medical Center", "Kaiser Permanente Oakland",
    "Valley Presbyterian", "Tufts Medical Center", "Highland Hospital",
)  # fmt: skip
CLINICS = (
    "Riverbend Family Health", "Harbor Pediatrics", "Northgate Dialysis Center", "Sunrise of Fairfax",
    "Maplewood Skilled Nursing Facility", "Greenfield Rehabilitation Center",
    "Eastside Community Health Center", "Pinecrest Assisted Living", "Hope Hospice House",
    "Lighthouse Behavioral Health", "Bayview Wound Clinic", "Cornerstone Urgent Care", "St. Anne's Home",
    "Willow Creek Memory Care",
)  # fmt: skip
EMAIL_DOMAINS = (
    "gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "comcast.net", "aol.com",
)  # fmt: skip
RELATIONS = (
    "daughter", "son", "wife", "husband", "sister", "brother", "niece", "grandson", "mother", "partner",
)  # fmt: skip
WEEKDAYS = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
NUMBER_WORDS = {
    90: "ninety",
    91: "ninety-one",
    92: "ninety-two",
    93: "ninety-three",
    94: "ninety-four",
    95: "ninety-five",
    96: "ninety-six",
    97: "ninety-seven",
    98: "ninety-eight",
    99: "ninety-nine",
    100: "one hundred",
    101: "one hundred and one",
    102: "one hundred two",
    103: "one hundred three",
}

# Text that looks like an identifier to a careless rule but must be kept.
LOOKALIKES = (
    "BP 142/88, HR 96, RR 18, SpO2 94% on 2 L.", "Na 134, K 3.3, Cr 1.42, INR 2.7.",
    "Strength 5/5 throughout; reflexes 2+ and symmetric.", "Known Parkinson disease and Graves disease.",
    "History of Hodgkin lymphoma treated with ABVD in 2009.",
    "Positive Babinski sign on the left; negative Romberg.",
    "Foley catheter removed; Jackson-Pratt drain with 30 mL serous output.", "Gleason 3+4=7, grade group 2.",
    "Lasix 40 mg PO BID, metoprolol 25 mg q12h, 1/2 tab at night.", "ICD-10 I50.23, CPT 99223.",
    "Apgar 8/9. Visual acuity 20/40 OU.", "GCS 15, pupils 3 mm and reactive.",
    "Ejection fraction 35-40% by Simpson's method.",
    "Seen for Bell's palsy; Addison disease on hydrocortisone 15 mg/5 mg.",
    "A 67-year-old with a 40 pack-year history.", "CD4 count 412 cells/uL, viral load <20 copies/mL.",
    "Whipple procedure in 2016; Roux-en-Y in 2011.", "Titer 1:160. pH 7.31, pCO2 48.",
    "Braden score 14; Morse fall score 45.", "Levels C5-C6 and L4-L5 show mild stenosis.",
    "Dose: 0.5 mL IM, lot checked against the MAR.", "Temperature 38.4 C, weight 71.2 kg, BMI 24.6.",
    "Down syndrome; Hashimoto thyroiditis.", "Mallampati II; ASA class III.",
    "PHQ-9 score 17, GAD-7 score 12.",
)  # fmt: skip


class _Faker:
    """Draws planted values from a seeded generator so the set is the same on every run."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, pool: tuple[str, ...]) -> str:
        return self.rng.choice(pool)

    def person(self) -> tuple[str, str]:
        return self.pick(GIVEN), self.pick(SURNAMES)

    def full_name(self) -> str:
        """A name in one of the forms notes use; titles stay outside the span."""
        first, last = self.person()
        initial = self.rng.choice(MIDDLE_INITIALS)
        form = self.rng.randrange(9)
        if form == 0:
            return f"{first} {last}"
        if form == 1:
            return f"{last}, {first}"
        if form == 2:
            return f"{first[0]}. {last}"
        if form == 3:
            return f"{last.upper()}, {first.upper()}"
        if form == 4:
            return f"{first} {initial}. {last}"
        if form == 5:
            return f"{first.lower()} {last.lower()}"
        if form == 6:
            return f"{last.upper()}, {first.upper()} {initial}"
        if form == 7:
            return f"{first} {last}-{self.pick(SURNAMES).replace(' ', '')}"
        return f"{last} {first}"

    def surname(self) -> str:
        last = self.pick(SURNAMES)
        return last.lower() if self.rng.random() < 0.15 else last

    def given(self) -> str:
        return self.pick(GIVEN)

    def facility(self) -> str:
        return self.pick(HOSPITALS) if self.rng.random() < 0.6 else self.pick(CLINICS)

    def street(self) -> tuple[str, str]:
        """A (kind, value) pair: a street address or a PO box."""
        number = self.rng.randrange(2, 9800)
        form = self.rng.randrange(5)
        base = f"{number} {self.pick(STREET_NAMES)} {self.pick(STREET_TYPES)}"
        if form == 0:
            return "STREET_ADDRESS", f"{base}, Apt {self.rng.randrange(1, 40)}{self.rng.choice('ABCD')}"
        if form == 1:
            return "PO_BOX", f"PO Box {self.rng.randrange(100, 99999)}"
        if form == 2:
            return "STREET_ADDRESS", f"{base}, Unit {self.rng.randrange(100, 999)}"
        return "STREET_ADDRESS", base

    def zip_code(self) -> str:
        code = f"{self.rng.randrange(1000, 99950):05d}"
        return f"{code}-{self.rng.randrange(1, 9999):04d}" if self.rng.random() < 0.3 else code

    def date(self) -> str:
        year = self.rng.randrange(2015, 2027)
        month = self.rng.randrange(1, 13)
        day = self.rng.randrange(1, 29)
        name = MONTHS[month - 1]
        form = self.rng.randrange(12)
        forms = (
            f"{month:02d}/{day:02d}/{year}",
            f"{month}/{day}/{year % 100:02d}",
            f"{year}-{month:02d}-{day:02d}",
            f"{name} {day}, {year}",
            f"{day} {name} {year}",
            f"{name[:3]} {day}",
            f"{day:02d}-{name[:3].upper()}-{year}",
            f"{name} {year}",
            f"{month}/{day}",
            f"{self.pick(WEEKDAYS)}, {name} {day}",
            f"{name[:3]}. {day}, {year}",
            f"{day}.{month}.{year}",
        )
        return forms[form]

    def old_age(self) -> tuple[int, str]:
        age = self.rng.randrange(90, 104)
        return age, NUMBER_WORDS[age]

    def phone(self) -> str:
        area, mid, last = (
            self.rng.randrange(201, 990),
            self.rng.randrange(200, 999),
            self.rng.randrange(0, 10000),
        )
        form = self.rng.randrange(6)
        forms = (
            f"({area}) {mid}-{last:04d}",
            f"{area}-{mid}-{last:04d}",
            f"{area}.{mid}.{last:04d}",
            f"+1 {area} {mid} {last:04d}",
            f"1-{area}-{mid}-{last:04d}",
            f"{area}-{mid}-{last:04d} ext. {self.rng.randrange(10, 999)}",
        )
        return forms[form]

    def email(self, first: str, last: str) -> str:
        clean_first = "".join(c for c in first.lower() if c.isascii() and c.isalpha()) or "pt"
        clean_last = "".join(c for c in last.lower() if c.isascii() and c.isalpha()) or "home"
        local = self.rng.choice(
            (
                f"{clean_first}.{clean_last}",
                f"{clean_first[0]}{clean_last}{self.rng.randrange(10, 99)}",
                f"{clean_last}_{clean_first}",
                f"{clean_first}{self.rng.randrange(1950, 2005)}",
            )
        )
        return f"{local}@{self.pick(EMAIL_DOMAINS)}"

    def ssn(self) -> str:
        a, b, c = self.rng.randrange(100, 899), self.rng.randrange(10, 99), self.rng.randrange(1000, 9999)
        return self.rng.choice((f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{a}.{b}.{c}"))

    def digits(self, n: int) -> str:
        return "".join(str(self.rng.randrange(10)) for _ in range(n))

    def letters(self, n: int) -> str:
        return "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(n))

    def record_id(self) -> tuple[str, str, str]:
        """A (label, kind, value) triple: the label is kept, the value is the identifier."""
        choices = (
            ("MRN:", "MRN", self.digits(8)),
            ("MR#", "MRN", self.digits(7)),
            ("Medical record no.", "MRN", f"{self.letters(1)}{self.digits(6)}"),
            ("Acct #", "ACCOUNT", f"{self.digits(4)}-{self.digits(5)}"),
            ("Account number", "ACCOUNT", self.digits(10)),
            ("Member ID", "HEALTH_PLAN", f"{self.letters(3)}{self.digits(9)}"),
            (
                "Medicare MBI",
                "HEALTH_PLAN",
                f"{self.digits(1)}{self.letters(2)}{self.digits(1)}-{self.letters(2)}{self.digits(1)}-{self.letters(2)}{self.digits(2)}",
            ),
            ("Medicaid #", "HEALTH_PLAN", f"{self.letters(2)}{self.digits(8)}"),
            ("Policy", "HEALTH_PLAN", f"{self.letters(1)}{self.digits(3)}-{self.digits(4)}-{self.digits(2)}"),
            ("Encounter", "ACCOUNT", f"ENC{self.digits(9)}"),
        )
        return self.rng.choice(choices)

    def other_id(self) -> tuple[str, str, str]:
        """A (label, kind, value) triple for a licence, device or vehicle number."""
        choices = (
            (
                "driver's licence",
                "LICENCE",
                f"{self.letters(1)}{self.digits(3)}-{self.digits(4)}-{self.digits(4)}",
            ),
            ("DEA #", "LICENCE", f"{self.letters(2)}{self.digits(7)}"),
            ("state licence no.", "LICENCE", f"RN{self.digits(6)}"),
            ("pacemaker serial", "DEVICE", f"{self.letters(3)}{self.digits(6)}{self.letters(1)}"),
            ("insulin pump S/N", "DEVICE", f"{self.letters(2)}{self.digits(7)}"),
            ("plate", "VEHICLE", f"{self.digits(1)}{self.letters(3)}{self.digits(3)}"),
            (
                "VIN",
                "VEHICLE",
                f"1{self.letters(2)}{self.digits(2)}{self.letters(1)}{self.digits(5)}{self.letters(1)}{self.digits(5)}",  # 17 characters, as every VIN
            ),
            ("passport", "LICENCE", f"{self.digits(9)}"),
        )
        return self.rng.choice(choices)

    def url(self, last: str) -> str:
        handle = "".join(c for c in last.lower() if c.isascii() and c.isalpha()) or "family"
        return self.rng.choice(
            (
                f"https://www.caringbridge.org/visit/{handle}{self.rng.randrange(10, 99)}",
                f"http://www.gofundme.com/f/help-{handle}-family",
                f"https://portal.{handle}-clinic.org/patient/{self.digits(6)}",
                f"www.facebook.com/{handle}.{self.digits(4)}",
            )
        )

    def ip(self) -> str:
        if self.rng.random() < 0.15:
            return f"2001:db8:{self.rng.randrange(4096):x}::{self.rng.randrange(4096):x}"
        return ".".join(str(self.rng.randrange(1, 255)) for _ in range(4))

    def lookalike(self) -> str:
        return self.pick(LOOKALIKES)


def _age_phrase(b: _NoteBuilder, f: _Faker) -> None:
    """An age that Safe Harbor requires removing (over 89) in one of the forms notes use."""
    age, words = f.old_age()
    form = f.rng.randrange(7)
    if form == 0:
        b.phi("AGE_OVER_89", str(age)).text("-year-old ")
    elif form == 1:
        b.phi("AGE_OVER_89", str(age)).text(" yo ")
    elif form == 2:
        b.phi("AGE_OVER_89", words).text("-year-old ")
    elif form == 3:
        b.phi("AGE_OVER_89", str(age)).text(" y/o ")
    elif form == 4:
        b.text("aged ").phi("AGE_OVER_89", words).text(", ")
    elif form == 5:
        b.phi("AGE_OVER_89", str(age)).text("F ")
    else:
        b.phi("AGE_OVER_89", str(age)).text(" year old ")


def _young_age(f: _Faker) -> str:
    return f"{f.rng.randrange(19, 89)}-year-old "


def _city_line(b: _NoteBuilder, f: _Faker) -> None:
    b.phi("CITY", f.pick(CITIES)).text(f", {f.pick(STATES)} ").phi("ZIP", f.zip_code())


# --- genres ---------------------------------------------------------------------------------------------


def _ed_triage(b: _NoteBuilder, f: _Faker) -> None:
    b.text("ED TRIAGE NOTE\nArrival: ").phi("DATE", f.date()).text(" 02:14 by EMS\nPatient: ")
    b.phi("NAME", f.full_name()).text("   ")
    label, kind, value = f.record_id()
    b.text(f"{label} ").phi(kind, value).text("\nCC: fall at home. ")
    if f.rng.random() < 0.5:
        _age_phrase(b, f)
        b.text("female found on floor by neighbor. ")
    else:
        b.text(f"{_young_age(f)}male, tripped on stairs. ")
    b.text(f.lookalike()).text("\nLives alone at ").phi(*f.street()).text(", ")
    _city_line(b, f)
    b.text(". Emergency contact: ").text(f.pick(RELATIONS)).text(" ").phi("NAME", f.full_name())
    b.text(" at ").phi("PHONE", f.phone()).text(".\nTriage RN: ").phi("NAME", f.full_name()).text(", RN\n")


def _operative(b: _NoteBuilder, f: _Faker) -> None:
    b.text("OPERATIVE REPORT\n").phi("FACILITY", f.pick(HOSPITALS)).text(" - Main OR\nDate of surgery: ")
    b.phi("DATE", f.date()).text("\nSurgeon: Dr. ").phi("NAME", f.surname()).text("\nAssistant: ")
    b.phi("NAME", f.full_name()).text(", PA-C\nAnesthesia: ").phi("NAME", f.full_name()).text(", MD\n")
    b.text("Patient: ").phi("NAME", f.full_name()).text(", ")
    label, kind, value = f.record_id()
    b.text(f"{label} ").phi(kind, value).text("\nProcedure: laparoscopic cholecystectomy. ")
    b.text(f.lookalike()).text(" EBL 25 mL. ")
    label, kind, value = f.other_id()
    if kind == "DEVICE":
        b.text(f"Device noted, {label} ").phi(kind, value).text(", interrogated preoperatively. ")
    b.text("Specimen to pathology. Disposition: PACU, then ").phi("FACILITY", f.pick(CLINICS)).text(".\n")


def _discharge(b: _NoteBuilder, f: _Faker) -> None:
    first, last = f.person()
    b.text("DISCHARGE SUMMARY\nName: ").phi("NAME", f"{last}, {first}").text("  DOB: ").phi("DATE", f.date())
    b.text("\nAdmitted: ").phi("DATE", f.date()).text("  Discharged: ").phi("DATE", f.date())
    b.text("\nAttending: ").phi("NAME", f.full_name()).text(", MD\n\nHospital course: Mr. ").phi("NAME", last)
    b.text(" is a ")
    if f.rng.random() < 0.4:
        _age_phrase(b, f)
    else:
        b.text(_young_age(f))
    b.text("man admitted with CHF exacerbation. ").text(f.lookalike()).text(" ")
    b.text(f.lookalike()).text("\nFollow-up with Dr. ").phi("NAME", f.full_name()).text(" at ")
    b.phi("FACILITY", f.facility()).text(" on ").phi("DATE", f.date()).text("; call ").phi("PHONE", f.phone())
    b.text(" to confirm. Discharged home to ").phi(*f.street()).text(", ").phi("CITY", f.pick(CITIES))
    b.text(", with his ").text(f.pick(RELATIONS)).text(", ").phi("NAME", f.given()).text(".\n")


def _pathology(b: _NoteBuilder, f: _Faker) -> None:
    b.text("SURGICAL PATHOLOGY REPORT\nAccession: ").phi("MRN", f"S{f.rng.randrange(15, 27)}-{f.digits(5)}")
    b.text("\nPatient: ").phi("NAME", f.full_name()).text("   ")
    label, kind, value = f.record_id()
    b.text(f"{label} ").phi(kind, value).text("\nCollected: ").phi("DATE", f.date()).text("  Received: ")
    b.phi("DATE", f.date()).text("\nSubmitting physician: ").phi("NAME", f.full_name()).text(", ")
    b.phi("FACILITY", f.facility()).text("\nDIAGNOSIS: Prostate, needle core biopsies: adenocarcinoma. ")
    b.text(f.lookalike()).text("\nElectronically signed by ").phi("NAME", f.full_name()).text(", MD on ")
    b.phi("DATE", f.date()).text(".\n")


def _radiology(b: _NoteBuilder, f: _Faker) -> None:
    b.text("CT CHEST WITH CONTRAST\nExam date: ").phi("DATE", f.date()).text("   Pt: ")
    b.phi("NAME", f.full_name()).text(" (").phi("MRN", f.digits(8)).text(")\nComparison: outside study from ")
    b.phi("FACILITY", f.pick(HOSPITALS)).text(" dated ").phi("DATE", f.date()).text(".\nFindings: ")
    b.text(f.lookalike()).text(" 6 mm nodule in the right upper lobe, image 42 of 180.\n")
    b.text("Images pushed to workstation ").phi("IP_ADDRESS", f.ip()).text(" and available at ")
    b.phi(
        "URL",
        f"https://pacs.{f.rng.choice(('northshore', 'valleyimaging', 'metrorad'))}.org/viewer?study={f.digits(10)}",
    )
    b.text(".\nDiscussed with Dr. ").phi("NAME", f.surname()).text(" by phone at ").phi("PHONE", f.phone())
    b.text(" on ").phi("DATE", f.date()).text(".\n")


def _psychiatry(b: _NoteBuilder, f: _Faker) -> None:
    first, last = f.person()
    b.text("PSYCHIATRY INTAKE\nDate: ").phi("DATE", f.date()).text("\nIdentifying data: ").phi("NAME", first)
    b.text(" ").phi("NAME", last).text(" is a ").text(_young_age(f)).text("divorced teacher from ")
    b.phi("CITY", f.pick(CITIES)).text(", referred by her PCP Dr. ").phi("NAME", f.full_name()).text(".\n")
    b.text("Collateral from ").text(f.pick(RELATIONS)).text(" ").phi("NAME", f.full_name()).text(" (")
    b.phi("PHONE", f.phone()).text("). Prior admission to ").phi("FACILITY", f.pick(CLINICS)).text(" in ")
    b.phi("DATE", f"{f.pick(MONTHS)} {f.rng.randrange(2005, 2024)}").text(". ").text(f.lookalike())
    b.text("\nShe works at ").phi("FACILITY", f.pick(HOSPITALS)).text(" as a unit clerk. Her grandmother, ")
    _age_phrase(b, f)
    b.text("lives with her. Contact email on file: ").phi("EMAIL", f.email(first, last)).text(".\n")


def _pharmacy(b: _NoteBuilder, f: _Faker) -> None:
    b.text("PHARMACY CONSULT\nRe: ").phi("NAME", f.full_name()).text(", DOB ").phi("DATE", f.date()).text(
        "\n"
    )
    label, kind, value = f.record_id()
    b.text(f"{label} ").phi(kind, value).text("\nWarfarin dosing per protocol. ").text(f.lookalike()).text(
        " "
    )
    b.text(f.lookalike()).text("\nPrescriber: ").phi("NAME", f.full_name()).text(", DEA # ")
    b.phi("LICENCE", f"{f.letters(2)}{f.digits(7)}").text(", NPI ").phi("LICENCE", f.digits(10)).text("\n")
    b.text("Refills faxed to ").phi("FAX", f.phone()).text(" (fax). Questions: pharmacist ")
    b.phi("NAME", f.full_name()).text(", PharmD, ").phi("EMAIL", f.email(*f.person())).text("\n")


def _home_health(b: _NoteBuilder, f: _Faker) -> None:
    first, last = f.person()
    b.text("HOME HEALTH SKILLED NURSING VISIT\nVisit date: ").phi("DATE", f.date()).text("\nClient: ")
    b.phi("NAME", f"{first} {last}").text(", ")
    _age_phrase(b, f)
    b.text("\nAddress: ").phi(*f.street()).text("\n")
    _city_line(b, f)
    b.text("\nGate code 4471. Key with neighbor ").phi("NAME", f.full_name()).text(". ").text(f.lookalike())
    b.text(" Son ").phi("NAME", f.given()).text(" drives a silver sedan, plate ").phi(
        "VEHICLE", f"{f.digits(1)}{f.letters(3)}{f.digits(3)}"
    )
    b.text(". Next visit ").phi("DATE", f.date()).text(". Agency on-call: ").phi("PHONE", f.phone()).text(
        ".\n"
    )
    b.text("Nurse: ").phi("NAME", f.full_name()).text(", RN, state licence no. ").phi(
        "LICENCE", f"RN{f.digits(6)}"
    ).text("\n")


def _insurance(b: _NoteBuilder, f: _Faker) -> None:
    first, last = f.person()
    b.phi("DATE", f.date()).text("\n\nAppeals Department\n").phi(*f.street()).text("\n")
    _city_line(b, f)
    b.text("\n\nRe: ").phi("NAME", f"{first} {last}").text("\nMember ID: ").phi(
        "HEALTH_PLAN", f"{f.letters(3)}{f.digits(9)}"
    )
    b.text("\nClaim: ").phi("ACCOUNT", f"{f.digits(4)}-{f.digits(6)}").text("\nSSN: ").phi("SSN", f.ssn())
    b.text("\n\nTo whom it may concern:\nI am writing on behalf of my patient, ").phi(
        "NAME", f"{first} {last}"
    )
    b.text(", to appeal the denial of coverage for home oxygen. ").text(f.lookalike()).text("\n")
    b.text("Please contact my office at ").phi("PHONE", f.phone()).text(" or fax ").phi("FAX", f.phone())
    b.text(".\n\nSincerely,\n").phi("NAME", f.full_name()).text(", MD\n").phi("FACILITY", f.facility()).text(
        "\n"
    )


def _portal(b: _NoteBuilder, f: _Faker) -> None:
    first, last = f.person()
    b.text("PATIENT PORTAL MESSAGE\nFrom: ").phi("NAME", f"{first} {last}").text(" <")
    b.phi("EMAIL", f.email(first, last)).text(">\nSent: ").phi("DATE", f.date()).text(" 9:42 PM from ")
    b.phi("IP_ADDRESS", f.ip()).text("\n\nhi dr ").phi("NAME", f.surname().lower()).text(", my mom ")
    b.phi("NAME", f.given()).text(" is ")
    _age_phrase(b, f)
    b.text("now and her BP was 168/94 this morning. we moved her to ").phi(*f.street()).text(" in ")
    b.phi("CITY", f.pick(CITIES)).text(". we set up a page for updates: ").phi("URL", f.url(last))
    b.text(" . can you call me at ").phi("PHONE", f.phone()).text("? thanks\n")


def _social_work(b: _NoteBuilder, f: _Faker) -> None:
    b.text("SOCIAL WORK NOTE ").phi("DATE", f.date()).text("\nMet with pt and ").text(f.pick(RELATIONS)).text(
        " "
    )
    b.phi("NAME", f.full_name()).text(" regarding placement. Pt's SSN ").phi("SSN", f.ssn())
    b.text(" verified for Medicaid application, ")
    label, kind, value = f.record_id()
    b.text(f"{label} ").phi(kind, value).text(". Referral sent to ").phi("FACILITY", f.pick(CLINICS))
    b.text(" and ").phi("FACILITY", f.pick(CLINICS)).text(". ").text(f.lookalike())
    b.text("\nPt previously homeless, staying at shelter on ").phi(*f.street()).text(". ")
    label, kind, value = f.other_id()
    b.text(f"ID documents: {label} ").phi(kind, value).text(". Case manager ").phi("NAME", f.full_name())
    b.text(", ").phi("PHONE", f.phone()).text(".\n")


def _telemetry(b: _NoteBuilder, f: _Faker) -> None:
    b.text("CARDIOLOGY DEVICE CLINIC\n").phi("FACILITY", f.facility()).text("\nPatient ")
    b.phi("NAME", f.full_name()).text(" seen ").phi("DATE", f.date()).text(". ")
    _age_phrase(b, f)
    b.text("with CHB s/p dual-chamber pacemaker, serial ").phi(
        "DEVICE", f"{f.letters(3)}{f.digits(6)}{f.letters(1)}"
    )
    b.text(". ").text(f.lookalike()).text(" Remote monitor transmits from ").phi("IP_ADDRESS", f.ip())
    b.text("; next remote check ").phi("DATE", f.date()).text(". Reviewed with Dr. ").phi("NAME", f.surname())
    b.text(" and NP ").phi("NAME", f.full_name()).text(".\n")


GENRES: tuple[tuple[str, Callable[[_NoteBuilder, _Faker], None]], ...] = (
    ("ed_triage", _ed_triage),
    ("operative", _operative),
    ("discharge", _discharge),
    ("pathology", _pathology),
    ("radiology", _radiology),
    ("psychiatry", _psychiatry),
    ("pharmacy", _pharmacy),
    ("home_health", _home_health),
    ("insurance", _insurance),
    ("portal", _portal),
    ("social_work", _social_work),
    ("device_clinic", _telemetry),
)


def unseen_notes(*, seed: int = UNSEEN_SEED, count: int = UNSEEN_NOTE_COUNT) -> list[UnseenNote]:
    """`count` notes cycling through the genres, each with its planted spans."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    faker = _Faker(random.Random(seed))
    notes = []
    for index in range(count):
        genre, write = GENRES[index % len(GENRES)]
        builder = _NoteBuilder()
        write(builder, faker)
        notes.append(builder.build(genre))
    return notes

"""A fifth set of synthetic clinical notes with planted identifiers, to measure a de-identifier on notes
nobody fitted it to.

Written from general knowledge without reading the de-identifier (`client_agent/deid*.py`,
`client_agent/phi.py`), its docs or the other four note sets; only the scorer's vocabulary of Safe
Harbor types (`tests/deid_sets.py`) was read. Each note is one of many genres (triage, operative,
pathology, psychiatry, pharmacy, portal message, death summary, dental, obstetrics, ...), drawn from
one seeded generator; identifiers come from `tests/deid_fifth_draws.py` with exact spans, and clinical
look-alikes (doses, lab values, blood pressures, scores, eponyms, vertebral levels, ages under 90,
years alone, holidays, room and bed numbers) are plain text that a finder should keep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tests.deid_fifth_draws import Draws, Span, mark, unmark

FIFTH_SEED = 520261207
FIFTH_COUNT = 260


@dataclass(frozen=True)
class FifthNote:
    genre: str
    text: str
    spans: tuple[Span, ...]


def ed_triage(g: Draws) -> str:
    p = g.person()
    age = g.old_age() if g.r.random() < 0.3 else g.young_age()
    crash = ""
    if g.r.random() < 0.5:
        crash = (
            f" Restrained driver of a {g.year()} sedan, plate {g.plate()}, struck on the passenger side"
            f" near {g.street()}; EMS notes airbag deployment."
        )
    return (
        f"ED TRIAGE NOTE  {g.room().upper()}\n"
        f"Arrival: {g.date(form=g.r.choice(('mdy', 'iso', 'mdy_short')))} 02:14 by ambulance\n"
        f"Patient: {g.name(p, g.r.choice(('caps_sorted', 'sorted', 'full')))}   MRN {g.mrn()}   DOB {g.dob()}\n"
        f"CC: {g.r.choice(('chest pain', 'fall', 'shortness of breath', 'syncope', 'abdominal pain'))}, pain {g.pain()}.\n"
        f"HPI: {age} with {g.eponym()} and atrial fibrillation on {g.drug()}.{crash}\n"
        f"Vitals: {g.vitals()}. ESI level {g.r.randint(1, 4)}.\n"
        f"Contact: {g.relative()} at {g.phone()}.\n"
        f"Triage RN: {g.clinician()}"
    )


def operative_report(g: Draws) -> str:
    p = g.person()
    implant = (
        f"Implant: {g.r.choice(('titanium pedicle screw system', 'cemented femoral stem', 'cochlear implant receiver'))},"
        f" serial number {g.device()}, lot {g.r.randint(100, 999)}."
    )
    return (
        f"OPERATIVE REPORT\n{g.facility('hospital')}, OR {g.r.randint(1, 14)}\n"
        f"Patient name: {g.name(p, 'caps_sorted')}\nMedical record #: {g.mrn()}\n"
        f"Date of surgery: {g.date()}\nSurgeon: {g.clinician()}\nAssistant: {g.clinician()}\n"
        f"Anesthesia: general, ASA class {g.r.randint(1, 4)}.\n"
        f"Preoperative diagnosis: spinal stenosis at {g.spine()} with {g.eponym()}.\n"
        f"Procedure: decompressive laminectomy {g.spine()}. Estimated blood loss {g.r.randint(50, 900)} mL.\n"
        f"{implant}\nThe patient tolerated the procedure and went to PACU {g.room()}. "
        f"Cefazolin 2 g IV given. Follow up with {g.clinician()} at {g.facility('clinic')} in 2 weeks."
    )


def discharge_summary(g: Draws) -> str:
    p = g.person()
    admit = g.day()
    age = g.old_age() if g.r.random() < 0.35 else g.young_age()
    return (
        f"DISCHARGE SUMMARY - {g.facility('hospital')}\n"
        f"Name: {g.name(p)}    Acct#: {g.account()}    MRN: {g.mrn()}\n"
        f"Admitted: {g.date(admit)}   Discharged: {g.date()}\n"
        f"{age} admitted {g.holiday()} with decompensated heart failure, EF {g.r.randint(15, 60)}%. "
        f"Diuresed with {g.drug()}; discharge weight {g.r.randint(45, 130)} kg. Labs at discharge: {g.labs()}.\n"
        f"History of {g.eponym()} diagnosed in {g.year()}.\n"
        f"Disposition: home to {g.address()} with {g.relative()}.\n"
        f"Instructions online at {g.url(p)}. Questions: {g.phone()}.\n"
        f"Attending: {g.clinician()}"
    )


def pathology(g: Draws) -> str:
    p = g.person()
    return (
        f"SURGICAL PATHOLOGY REPORT   Accession: {g.accession()}\n"
        f"{g.facility('lab')}\n"
        f"Patient: {g.name(p, g.r.choice(('caps_sorted', 'sorted')))}   MRN {g.mrn()}   Sex: {g.r.choice('FM')}\n"
        f"Collected: {g.date(form=g.r.choice(('mdy', 'compact', 'iso')))}  Received: {g.date()}\n"
        f"Submitting physician: {g.clinician()}\n"
        f"Specimen: colon, sigmoid, {g.r.randint(8, 40)} cm segment.\n"
        f"Diagnosis: invasive adenocarcinoma, moderately differentiated, pT3 N1a; {g.r.randint(1, 3)} of "
        f"{g.r.randint(12, 30)} lymph nodes positive. Margins negative (closest 1.2 cm). Ki-67 30%.\n"
        f"Comment: findings discussed with {g.clinician()} by phone on {g.date(form='md')} at 15:40.\n"
        f"Electronically signed: {g.clinician()}"
    )


def radiology(g: Draws) -> str:
    p = g.person()
    return (
        f"RADIOLOGY REPORT\nExam: MRI lumbar spine without contrast   Accession {g.accession()}\n"
        f"Patient {g.name(p)}, {g.young_age()}, MRN {g.mrn()}\n"
        f"Performed at {g.facility('lab')} on {g.date(form='weekday')}.\n"
        f"Comparison: CT from {g.date(form=g.r.choice(('month_year', 'mm_yyyy')))}.\n"
        f"Findings: disc protrusion at {g.spine()} contacting the traversing S1 nerve root; mild canal "
        f"stenosis at {g.spine()}. Conus terminates at L1. No fracture.\n"
        f"Impression: degenerative change, Pfirrmann grade {g.r.randint(2, 5)}.\n"
        f"Read by {g.clinician()}; images sent to workstation {g.ip()}."
    )


def psychiatry_intake(g: Draws) -> str:
    p = g.person()
    return (
        f'PSYCHIATRY INTAKE\nPatient: {g.name(p, "full")} (prefers "{g.name(p, "given")}")\n'
        f"DOB {g.dob()}; SSN {g.ssn()}; MRN {g.mrn()}\n"
        f"Referred by {g.clinician()} of {g.facility('clinic')} after an overdose of {g.drug()} "
        f"{g.holiday()}. PHQ-9 score {g.r.randint(5, 27)}, GAD-7 {g.r.randint(3, 21)}.\n"
        f"Social: lives alone at {g.address()}; estranged from {g.relative()}; works at a bakery in "
        f"{g.city()[0]}. Born in {mark('CITY', g.r.choice(('Lagos', 'Chennai', 'Kraków', 'Guadalajara', 'Nablus', 'Cork')))}, emigrated in {g.year()}.\n"
        f"Family history: mother with {g.eponym()}.\n"
        f"Plan: start {g.drug()}; safety plan reviewed; crisis line {g.phone()}."
    )


def pharmacy(g: Draws) -> str:
    p = g.person()
    prescriber = g.person()
    mailing = g.po_box() if g.r.random() < 0.6 else g.street()
    return (
        f"{g.facility('pharmacy')} - PRESCRIPTION RECORD\n"
        f"Rx #{g.r.randint(1000000, 9999999)} filled {g.date(form=g.r.choice(('mdy', 'mdy_short')))}\n"
        f"Patient: {g.name(p, g.r.choice(('caps_sorted', 'sorted', 'caps')))}  DOB {g.dob()}\n"
        f"Mail to: {mailing}, {g.city_line()}\n"
        f"Drug: {g.drug()}, qty {g.r.randint(14, 90)}, refills {g.r.randint(0, 5)}. NDC 0093-{g.r.randint(1000, 9999)}-01.\n"
        f"Prescriber: {g.name(prescriber, 'full')}, MD  NPI {g.npi()}  DEA {g.dea(prescriber.family)}\n"
        f"Insurance member ID {g.plan_id()}; prescriber fax {g.phone('FAX')}.\n"
        f"Counselled by {g.clinician()}, PharmD."
    )


def home_health(g: Draws) -> str:
    p = g.person()
    return (
        f"HOME HEALTH VISIT  {g.date(form='weekday')}\n"
        f"Client: {g.name(p)}, {g.old_age()}, at {g.address()}\n"
        f"Medicare beneficiary ID {g.plan_id()}.\n"
        f"Oxygen concentrator serial {g.device()} checked; flow 2 L. Weight {g.r.randint(40, 95)} kg.\n"
        f"Wound on left heel 2 x 3 cm, stage {g.r.randint(1, 4)}; dressing changed. {g.vitals()}.\n"
        f"The {g.relative()} reports confusion since {g.date(form=g.r.choice(('ordinal', 'md')))}.\n"
        f"Gate code 4471#. Next visit {g.date(form='abbr')}. Agency: {g.facility('nursing')}, {g.phone()}.\n"
        f"Nurse: {g.clinician()}"
    )


def insurance_letter(g: Draws) -> str:
    p = g.person()
    return (
        f"{g.r.choice(('Blue Harbor Health Plan', 'Meridian Mutual Insurance', 'Cascadia Care Plan'))}\n"
        f"{g.po_box()}\n{g.city_line()}\n\n{g.date(form='long')}\n\n"
        f"{g.name(p, g.r.choice(('full', 'caps', 'middle')))}\n{g.address()}\n\n"
        f"RE: Member ID {g.plan_id()}; claim account {g.account()}; SSN on file ending {mark('SSN', g.digits(4))}\n"
        f"Dear {g.r.choice(('Mr.', 'Ms.', 'Mx.'))} {g.name(p, 'family')},\n"
        f"We reviewed the request from {g.clinician()} at {g.facility()} for {g.drug()} for "
        f"{g.eponym()}. Coverage is approved from {g.date(form='mdy')} through {g.date(form='mdy')}.\n"
        f"Appeals: fax {g.phone('FAX')} or write to {g.po_box()}. Details: {g.url()}.\n"
        f"Sincerely, {g.name(g.person(), 'full')}, Utilization Review"
    )


def portal_message(g: Draws) -> str:
    p = g.person()
    sign = g.name(p, g.r.choice(("given", "lower", "full")))
    return (
        f"Patient portal message  received {g.date(form='iso')} 21:07 from {g.ip()}\n"
        f"From: {g.name(p, 'full')} <{g.email(p)}>\nTo: {g.clinician()}\n"
        f"Subject: refill + question\n\n"
        f"hi, it's {sign}. my {g.drug().split()[0]} ran out {g.holiday()} and the pharmacy on "
        f"{g.street()} says they need a new script. also my sugar was 212 this morning and my A1c was 8.4 "
        f"in {g.year()}. can i come in {g.date(form=g.r.choice(('ordinal', 'md', 'weekday')))}? my new cell is {g.phone()}. "
        f"photo of the rash uploaded here {g.url(p)}\nthanks, {g.name(p, 'lower')}"
    )


def nursing_handoff(g: Draws) -> str:
    beds = []
    for _ in range(g.r.randint(2, 3)):
        p = g.person()
        age = g.old_age() if g.r.random() < 0.3 else g.young_age()
        beds.append(
            f"- {g.room()}: {g.name(p, g.r.choice(('sorted', 'caps', 'family', 'full')))}, {age}, "
            f"{g.eponym()}, {g.drug()}; {g.vitals()}; fall risk, {g.relative()} at bedside."
        )
    return (
        f"SBAR handoff {g.facility('hospital')} 4 West, night shift {g.date(form='md')}\n"
        + "\n".join(beds)
        + f"\nCharge nurse {g.clinician()} (ext. {g.r.randint(2000, 7999)}); pharmacy paged {g.phone()}."
    )


def telehealth(g: Draws) -> str:
    p = g.person()
    return (
        f"TELEHEALTH VISIT - video\nDate: {g.date()}  Patient: {g.name(p)}  MRN {g.mrn()}\n"
        f"Patient located at home in {g.city()[0]}; provider at {g.facility('clinic')}.\n"
        f"Link {g.url(p)}; session IP {g.ip()}; backup phone {g.phone()}.\n"
        f"Identity confirmed with DOB {g.dob()} and email {g.email(p)}.\n"
        f"S: {g.young_age()} with {g.eponym()}, tremor worse {g.holiday()}. O: {g.vitals()} (home cuff).\n"
        f"A/P: increase {g.drug()}; labs at {g.facility('lab')}; follow up {g.date(form='month_year')}.\n"
        f"{g.clinician()}"
    )


def referral_letter(g: Draws) -> str:
    p = g.person()
    return (
        f"{g.facility('clinic')}\n{g.address()}\nTel {g.phone()}  Fax {g.phone('FAX')}\n\n"
        f"{g.date(form=g.r.choice(('long', 'dmy_long', 'of')))}\n\n"
        f"Dear {g.clinician()},\n"
        f"Thank you for seeing {g.name(p, g.r.choice(('full', 'middle')))} (DOB {g.dob()}), a {g.young_age()} "
        f"with {g.eponym()} since {g.year()}, for evaluation of {g.r.choice(('Barrett esophagus', 'a thyroid nodule', 'resistant hypertension'))}. "
        f"Recent labs: {g.labs()}. Current medicines: {g.drug()}; {g.drug()}.\n"
        f"The patient can be reached at {g.phone()} or {g.email(p)}.\n"
        f"Yours sincerely,\n{g.clinician()}\nNPI {g.npi()}"
    )


def lab_report(g: Draws) -> str:
    p = g.person()
    return (
        f"{g.facility('lab').upper()} CLINICAL LABORATORY\n"
        f"PATIENT: {g.name(p, 'caps_sorted')}  DOB: {g.dob()}  MRN: {g.mrn()}  ACCT: {g.account()}\n"
        f"ORDERING: {g.clinician()}  FAX RESULTS TO {g.phone('FAX')}\n"
        f"COLLECTED {g.date(form=g.r.choice(('mdy', 'compact', 'dmy_abbr')))} 07:15  SPECIMEN ID {g.accession()}\n"
        f"{g.labs()}\nHbA1c {g.r.randint(50, 120) / 10:.1f} %   TSH {g.r.randint(1, 90) / 10:.1f} mIU/L   "
        f"Ferritin {g.r.randint(5, 900)} ng/mL\nCRITICAL K called to {g.clinician()} at 08:02 read back."
    )


def death_summary(g: Draws) -> str:
    p = g.person()
    return (
        f"DEATH SUMMARY\nDecedent: {g.name(p, g.r.choice(('full', 'caps', 'middle')))}  SSN {g.ssn()}  MRN {g.mrn()}\n"
        f"Patient, {g.old_age()}, was a resident of {g.facility('nursing')}, admitted from "
        f"{mark('FACILITY', g.r.choice(('Larkspur House', 'Whispering Pines', 'Golden Acres', 'Shady Oaks', 'Fairhaven')))} "
        f"with aspiration pneumonia and {g.eponym()}.\n"
        f"Time of death 03:52 on {g.date(form=g.r.choice(('long', 'weekday', 'mdy')))}, pronounced by {g.clinician()} "
        f"(licence {g.state_licence()}). Next of kin {g.relative()} notified at {g.phone()}.\n"
        f"Home address {g.address()}. Autopsy declined. Funeral home: {g.name(g.person(), 'family')} & Sons."
    )


def dental(g: Draws) -> str:
    p = g.person()
    return (
        f"{g.facility('dental')} - dental progress note\n"
        f"Pt {g.name(p)}  chart {g.mrn()}  DOB {g.dob()}  insurer ID {g.plan_id()}\n"
        f"Visit {g.date()}: tooth #{g.r.randint(1, 32)} MOD composite; #{g.r.randint(1, 32)} watch. "
        f"Lidocaine 2% with epi 1:100,000, 1.8 mL. Perio probing 3-4 mm.\n"
        f"Billing account {g.account()}. Recall in 6 months ({g.date(form='month_year')}).\n"
        f"{g.clinician()}, DDS"
    )


def obstetrics(g: Draws) -> str:
    mother = g.person()
    return (
        f"L&D ADMISSION NOTE  {g.facility('hospital')}  {g.room()}\n"
        f"{g.name(mother, 'full')}, {g.r.randint(16, 44)} y/o G{g.r.randint(1, 6)}P{g.r.randint(0, 4)} at "
        f"{g.r.randint(24, 41)}w{g.r.randint(0, 6)}d by LMP {g.date(form=g.r.choice(('mdy', 'md')))}, EDD {g.date()}.\n"
        f"Prenatal care at {g.facility('clinic')} with {g.clinician()}. GBS negative, Rh positive.\n"
        f"Contractions q3-4 min, cervix 5/80/-1. FHR 140s, moderate variability. {g.vitals()}.\n"
        f"Support person: {g.relative()} ({g.phone()}). Baby's father {g.name(g.person(), g.r.choice(('full', 'caps')))}.\n"
        f"Prior delivery {g.year()} by cesarean; Apgars 8/9. Plan: TOLAC, epidural, {g.drug()}."
    )


def ems_run(g: Draws) -> str:
    p = g.person()
    return (
        f"EMS PATIENT CARE REPORT  Medic {g.r.randint(1, 40)}\n"
        f"Incident {g.date(form='mdy')} 17:42 at {g.street()}, {g.city()[0]}.\n"
        f"Pt {g.name(p, g.r.choice(('caps_sorted', 'full', 'lower')))}, {g.young_age() if g.r.random() < 0.7 else g.old_age()}, "
        f"unrestrained passenger in vehicle plate {g.plate()} (VIN {g.vin()}).\n"
        f"GCS 14, {g.vitals()}. C-collar applied, c-spine tenderness at {g.spine()}.\n"
        f"Transported to {g.facility('hospital')}; report given to {g.clinician()}. Crew: {g.clinician()}."
    )


def release_of_information(g: Draws) -> str:
    p = g.person()
    return (
        f"AUTHORIZATION FOR RELEASE OF HEALTH INFORMATION\n"
        f"Patient name: {g.name(p)}   Date of birth: {g.dob()}\n"
        f"Social Security No.: {g.ssn()}   Driver's license: {g.state_licence()}\n"
        f"Address: {g.address()}   Mailing: {g.po_box()}\n"
        f"Phone: {g.phone()}   Email: {g.email(p)}\n"
        f"Release records of {g.date(form='month_year')} from {g.facility()} to {g.facility()}, "
        f"fax {g.phone('FAX')}, attention {g.name(g.person(), 'full')}.\n"
        f"Health plan ID {g.plan_id()}. Signed {g.date()} by {g.relative()} (health care proxy)."
    )


def social_work(g: Draws) -> str:
    p = g.person()
    return (
        f"SOCIAL WORK NOTE  {g.date(form='dmy_abbr')}\n"
        f"Met {g.name(p, g.r.choice(('full', 'given', 'lower')))} and {g.relative()} in {g.room()}. "
        f"Patient is a {g.young_age()} day laborer from {mark('CITY', g.r.choice(('Guadalajara', 'Lagos', 'Da Nang', 'Nukuʻalofa', 'Haifa', 'Tromsø')))}, "
        f"sleeping in a {g.year()} pickup, plate {g.plate()}, parked behind {g.facility('clinic')}.\n"
        f"SSN {g.ssn()} obtained for Medicaid application; Medicaid ID pending. Shelter bed at "
        f"{g.street()} offered. Contact email {g.email(p)}; cell {g.phone()}.\n"
        f"{g.clinician()}, LICSW"
    )


def cardiology_device(g: Draws) -> str:
    p = g.person()
    return (
        f"DEVICE CLINIC  {g.facility('clinic')}\n"
        f"Patient: {g.name(p)}  MRN {g.mrn()}  {g.old_age() if g.r.random() < 0.4 else g.young_age()}\n"
        f"Device: dual-chamber pacemaker, serial {g.device()}, implanted {g.date(form=g.r.choice(('mdy', 'month_year', 'dmy_long')))} at {g.facility('hospital')}.\n"
        f"Remote monitor serial {g.device()} last transmitted from {g.ip()} on {g.date(form='md')}.\n"
        f"Battery 8.5 years. RA pacing 34%, RV pacing 2%. AF burden <1%. Lead impedance 520 ohms.\n"
        f"On {g.drug()}. History of {g.eponym()}. Next remote check {g.date(form='abbr')}.\n"
        f"{g.clinician()}"
    )


def physical_therapy(g: Draws) -> str:
    p = g.person()
    return (
        f"PT INITIAL EVALUATION  {g.facility('nursing')}\n"
        f"{g.name(p, g.r.choice(('sorted', 'full')))}, {g.old_age() if g.r.random() < 0.4 else g.young_age()}, s/p fall {g.date(form='ordinal')} "
        f"with {g.r.choice(('L hip fracture', 'T12 compression fracture', 'wrist fracture'))}.\n"
        f"Lives with {g.relative()} in a 2-story home at {g.street()}; 12 steps, rail on right.\n"
        f"Berg 31/56, TUG 24 s, gait 40 ft with rolling walker, min assist x1. Pain {g.pain()}.\n"
        f"Goals by {g.date(form=g.r.choice(('md', 'abbr')))}: 150 ft modified independent. {g.clinician()}, DPT"
    )


GENRES: dict[str, Callable[[Draws], str]] = {
    f.__name__: f
    for f in (
        ed_triage, operative_report, discharge_summary, pathology, radiology, psychiatry_intake, pharmacy,
        home_health, insurance_letter, portal_message, nursing_handoff, telehealth, referral_letter,
        lab_report, death_summary, dental, obstetrics, ems_run, release_of_information, social_work,
        cardiology_device, physical_therapy,
    )
}  # fmt: skip


def fifth_notes(seed: int = FIFTH_SEED, count: int = FIFTH_COUNT) -> list[FifthNote]:
    """`count` notes, the genres in turn from a seeded shuffle; the same seed gives the same notes."""
    rng = random.Random(seed)
    draws = Draws(rng)
    order = list(GENRES)
    notes: list[FifthNote] = []
    for i in range(count):
        if i % len(order) == 0:
            rng.shuffle(order)
        genre = order[i % len(order)]
        text, spans = unmark(GENRES[genre](draws))
        notes.append(FifthNote(genre, text, spans))
    return notes

"""The document genres of the sixth note set: each draws one note of its kind from a `NoteContext`."""

from __future__ import annotations

from collections.abc import Callable

from tests import deid_sixth_pools as pools
from tests.deid_sixth_context import NoteContext
from tests.deid_sixth_formats import Frag, P, fill


def discharge_summary(g: NoteContext) -> Frag:
    pt, att, pcp = g.person(), g.person(), g.person()
    return fill(
        """DISCHARGE SUMMARY — {fac}
Patient: {pt}   MRN: {mrn}   Acct #: {acct}
DOB: {dob}   Admit: {adm}   Discharge: {dis}
Attending: {att}   PCP: {pcp}

HOSPITAL COURSE: {pt_short} is a {age} with {ep} and CHF (EF 30%) admitted for volume overload.
Diuresed with {med}. {filler} {filler2}
Discharged to {dest}. {extra}
Follow up with {pcp_short} in 1-2 weeks; call {phone} with questions.
Electronically signed: {att_sig} {sig_date} {time}""",
        {
            "fac": g.facility(), "pt": g.name(pt), "mrn": g.mrn(), "acct": g.account(), "dob": g.dob(),
            "adm": g.date(), "dis": g.date(), "att": g.clinician(att), "pcp": g.clinician(pcp),
            "pt_short": fill("{t} {s}", {"t": g.pick("Mr.", "Ms.", "Mrs.", "Pt"), "s": g.sur(pt)}),
            "age": g.age_phrase(), "ep": g.eponym(), "med": g.med(), "filler": g.filler(), "filler2": g.filler(),
            "dest": fill("{f}", {"f": g.facility()}) if g.chance(0.5) else Frag("home with family"),
            "extra": g.maybe(0.3, "Home address on file: {a}.", {"a": g.address(one_line=True)}),
            "pcp_short": fill("Dr. {s}", {"s": g.sur(pcp)}), "phone": g.phone(),
            "att_sig": P(f"{att.given} {att.surname}", "NAME"), "sig_date": g.date(), "time": g.time(),
        },
    )  # fmt: skip


def ed_triage(g: NoteContext) -> Frag:
    pt, rn = g.person(), g.person()
    return fill(
        """ED TRIAGE  {fac}  Arrival {date} {time}  {room}
Name: {pt}  Age: {age}  MRN {mrn}
CC: fall at home, {pain}. Lives at {addr}.
ESI 3. {vitals}. {score}.
Brought in by {who}. Emergency contact: {ec} ({rel}) {phone}.
{extra}Triage RN: {rn}""",
        {
            "fac": g.facility(), "date": g.date(), "time": g.time(), "room": g.room(), "pt": g.name(pt),
            "age": g.age(), "mrn": g.mrn(), "pain": g.pain(), "addr": g.address(one_line=True),
            "vitals": g.vitals(), "score": g.score(),
            "who": g.pick("EMS", "daughter", "son-in-law", "neighbor", "police", "self"),
            "ec": g.name(g.person()), "rel": g.pick("daughter", "son", "wife", "husband", "niece", "friend"),
            "phone": g.phone(),
            "extra": g.maybe(0.45, "Pt drove self, {v}, parked in lot C.\n", {"v": g.vehicle()}),
            "rn": g.clinician(rn),
        },
    )  # fmt: skip


def nursing_flowsheet(g: NoteContext) -> Frag:
    pt, rn, rn2 = g.person(), g.person(), g.person()
    return fill(
        """{time} {room} — pt {pt} resting, {pain}, repositioned q2h. {vitals}.
{time2} Braden 14. Family ({fam}) called, updated. Daughter's cell {phone}.
{time3} {med} given per MAR. IV site L forearm 20g, flushed. {filler}
{extra}Handoff to {rn2} at 1900. — {rn}""",
        {
            "time": g.time(), "room": g.room(), "pt": g.name(pt), "pain": g.pain(), "vitals": g.vitals(),
            "time2": g.time(), "fam": g.typed(g.person()), "phone": g.phone(), "time3": g.time(), "med": g.med(),
            "filler": g.filler(),
            "extra": g.maybe(0.4, "Bed alarm on. Pt states she is {a} years old and \"ready to go home\".\n", {"a": g.age()}),
            "rn2": g.clinician(rn2), "rn": g.clinician(rn),
        },
    )  # fmt: skip


def radiology_report(g: NoteContext) -> Frag:
    pt, rad, ref = g.person(), g.person(), g.person()
    return fill(
        """{fac} DEPARTMENT OF RADIOLOGY
EXAM: MRI LUMBAR SPINE WITHOUT CONTRAST     {code}
PATIENT: {pt}    MRN: {mrn}    DOB: {dob}    Acct: {acct}
ORDERING: {ref}
DATE OF SERVICE: {date}
COMPARISON: CT {cmp}.
FINDINGS: Disc desiccation at {lvl} and {lvl2}. Conus terminates at L1. {extra}
IMPRESSION: Mild multilevel spondylosis, worst at {lvl}.
Dictated by {rad} on {date2}; workstation {ip}.""",
        {
            "fac": g.facility(), "code": g.code(), "pt": g.name(pt), "mrn": g.mrn(), "dob": g.dob(),
            "acct": g.account(), "ref": g.clinician(ref), "date": g.date(), "cmp": g.date(), "lvl": g.level(),
            "lvl2": g.level(),
            "extra": g.maybe(0.4, "Spinal cord stimulator leads in place ({d}).", {"d": g.device()}),
            "rad": g.clinician(rad), "date2": g.date(),
            "ip": g.ip() if g.chance(0.5) else f"RAD-WS{g.rng.randint(1, 40):02d}",
        },
    )  # fmt: skip


def pathology_report(g: NoteContext) -> Frag:
    pt, path = g.person(), g.person()
    return fill(
        """SURGICAL PATHOLOGY REPORT
{fac}
Name: {pt}   Med Rec #: {mrn}   Sex: {sex}   Age: {age}
Collected: {col}   Received: {rec}   Surgeon: {surg}
SPECIMEN: Prostate, needle core biopsies (12).
DIAGNOSIS: Adenocarcinoma, {gleason}, involving 4 of 12 cores; perineural invasion present. T2N0M0.
Ki-67 {ki}%. {filler}
Pathologist: {path}  {lic}""",
        {
            "fac": g.facility(),
            "pt": g.name(pt), "mrn": g.mrn(), "sex": g.pick("M", "Male"), "age": g.age(), "col": g.date(),
            "rec": g.date(), "surg": g.clinician(), "gleason": g.pick("Gleason 3+4=7", "Gleason 4+4=8", "Grade Group 2"),
            "ki": str(g.rng.randint(2, 60)), "filler": g.filler(), "path": g.clinician(path), "lic": g.licence(),
        },
    )  # fmt: skip


def pharmacy_note(g: NoteContext) -> Frag:
    pt, rph, md = g.person(), g.person(), g.person()
    return fill(
        """PHARMACY CONSULT — Vancomycin dosing
Pt: {pt} ({mrn}), {age}, wt 82.4 kg, CrCl ~48 mL/min. {room}
Trough {tr} mcg/mL on {date}; goal AUC 400-600. Changed to {med}.
Prescriber {md}, {lic}. Insurance {plan_name} member {plan}.
Outpatient pharmacy: {fac} Pharmacy, ph {phone}, fax {fax}.
— {rph}""",
        {
            "pt": g.name(pt), "mrn": g.mrn(), "age": g.age_phrase(), "room": g.room(),
            "tr": str(g.rng.randint(60, 250) / 10), "date": g.date(), "med": g.med(), "md": g.clinician(md),
            "lic": g.licence(), "plan_name": g.pick("BCBS", "Medicaid", "Humana Gold", "UnitedHealthcare", "Tricare"),
            "plan": g.plan(), "fac": g.facility(), "phone": g.phone(), "fax": g.fax(), "rph": g.clinician(rph),
        },
    )  # fmt: skip


def portal_message(g: NoteContext) -> Frag:
    pt, md, kid = g.person(), g.person(), g.person()
    return fill(
        """From: {email}
Subject: {subj}{ip}
hi dr {md} this is {pt}, my {rel} {kid} had the fever again since {date} its 102.3 and the tylenol 160mg/5ml isnt helping.
we moved, new address is {addr} and my new cell is {phone}. {extra}
also can u send the school form to {email2}? thx
sent from my iphone""",
        {
            "ip": g.maybe(0.4, "   [sent from {ip}]", {"ip": g.ip()}), "email": g.email(pt), "subj": g.pick("question", "RE: appt", "meds??", "urgent pls read", "(no subject)"),
            "md": P(md.surname.lower(), "NAME"), "pt": g.typed(pt), "rel": g.pick("son", "daughter", "baby", "grandson"),
            "kid": g.typed(kid), "date": g.date(), "addr": g.address(one_line=True), "phone": g.phone(),
            "extra": g.maybe(0.45, "we started a page for his surgery {u} if anyone asks", {"u": g.url(pt)}),
            "email2": g.email(pt),
        },
    )  # fmt: skip


def telephone_encounter(g: NoteContext) -> Frag:
    pt, caller, rn, md = g.person(), g.person(), g.person(), g.person()
    return fill(
        """TELEPHONE ENCOUNTER {date} {time}
Caller: {caller} ({rel}) at {phone}   Patient: {pt}   DOB {dob}
Reason: {pt_given} missed INR check; last INR {inr} on {d2}. On warfarin 5 mg M/W/F, 2.5 mg other days.
Verified identity with DOB and {ver}.
Advised ED if bleeding. Routed to {md}. {extra}
{rn}""",
        {
            "date": g.date(), "time": g.time(), "caller": g.name(caller), "rel": g.pick("spouse", "daughter", "POA", "caregiver"),
            "phone": g.phone(), "pt": g.name(pt), "dob": g.dob(), "pt_given": g.given(pt),
            "inr": str(g.rng.randint(12, 49) / 10), "d2": g.date(),
            "ver": fill("last 4 of SSN {s}", {"s": P(f"{g.rng.randint(1, 9999):04d}", "SSN")}) if g.chance(0.6)
            else fill("address {a}", {"a": g.address(one_line=True)}),
            "md": g.clinician(md),
            "extra": g.maybe(0.3, "Caller asks results be faxed to {f}.", {"f": g.fax()}), "rn": g.clinician(rn),
        },
    )  # fmt: skip


def referral_letter(g: NoteContext) -> Frag:
    pt, md, to = g.person(), g.person(), g.person()
    return fill(
        """{fac}
{faddr}
Tel {phone}  |  Fax {fax}

{date}

{to}
{tofac}

Re: {pt}, DOB {dob}, MRN {mrn}

Dear Dr. {to_short},
Thank you for seeing {pt_short}, a {age} with {ep} and tremor worse since {yr}. Exam: {signs}. {filler}
Her insurance is Medicare (MBI {plan}). Please contact her at {pphone} or {email}.
Sincerely,
{md}
{memail}""",
        {
            "fac": g.facility(), "faddr": g.address(), "phone": g.phone(), "fax": g.fax(), "date": g.date(),
            "to": g.clinician(to), "tofac": g.facility(), "pt": g.name(pt), "dob": g.dob(), "mrn": g.mrn(),
            "to_short": g.sur(to), "pt_short": fill("Ms. {s}", {"s": g.sur(pt)}), "age": g.age_phrase(),
            "ep": g.eponym(), "yr": g.year(), "signs": g.pick("Romberg positive", "Babinski downgoing"),
            "filler": g.filler(), "plan": g.plan(), "pphone": g.phone(), "email": g.email(pt),
            "md": g.clinician(md), "memail": g.email(md, clinician=True),
        },
    )  # fmt: skip


def consent_form(g: NoteContext) -> Frag:
    pt, md, wit = g.person(), g.person(), g.person()
    return fill(
        """INFORMED CONSENT FOR PROCEDURE — {fac}
I, {pt}, date of birth {dob}, consent to LEFT TOTAL KNEE ARTHROPLASTY by {md} and assistants.
Risks including infection, DVT/PE, and need for revision were explained. Blood products: {blood}.
Patient signature: {sig}     Date: {date}  Time: {time}
Interpreter: {interp}
Witness: {wit}     MRN {mrn}""",
        {
            "fac": g.facility(), "pt": g.name(pt), "dob": g.dob(), "md": g.clinician(md),
            "blood": g.pick("accepts", "DECLINES (Jehovah's Witness)", "accepts"),
            "sig": P(f"{pt.given} {pt.surname}", "NAME"), "date": g.date(), "time": g.time(),
            "interp": fill("{n}, {lang} interpreter (in person)", {
                "n": g.name(g.person()), "lang": g.pick("Spanish", "Vietnamese", "Somali", "Hmong", "Arabic", "Haitian Creole"),
                }) if g.chance(0.5) else Frag("none needed"),
            "wit": g.clinician(wit), "mrn": g.mrn(),
        },
    )  # fmt: skip


def social_work_note(g: NoteContext) -> Frag:
    pt, sw, son = g.person(), g.person(), g.person()
    return fill(
        """SOCIAL WORK ASSESSMENT  {date}
Met with pt {pt} and son {son} at bedside ({room}). Pt is {age} y/o, widowed, lives alone at {addr}.
Income: SSDI; SSN {ssn} verified for Medicaid application. Medicaid # {plan}.
Son drives a {veh}; will transport to dialysis at {fac} MWF.
Son's contact: {sphone}, {semail}. {extra}{blog}
Plan: SNF referral to {snf}. {sw}""",
        {
            "date": g.date(), "pt": g.name(pt), "son": g.name(son), "room": g.room(), "age": g.age(),
            "addr": g.address(one_line=True), "ssn": g.ssn(), "plan": g.plan(), "veh": g.vehicle(),
            "fac": g.facility(), "sphone": g.phone(), "semail": g.email(son),
            "extra": g.maybe(0.3, "Pt's landlord {n} can be reached at {p}.", {"n": g.name(g.person()), "p": g.phone()}),
            "blog": g.maybe(0.6, " Family posts updates at {u}.", {"u": g.url(son)}), "snf": g.facility(), "sw": g.clinician(sw),
        },
    )  # fmt: skip


def home_health(g: NoteContext) -> Frag:
    pt, rn = g.person(), g.person()
    return fill(
        """HOME HEALTH SKILLED NURSING VISIT — {agency}
Visit date {date}, time in {t1}, time out {t2}. Pt {pt}, {age}. Address: {addr}
Directions: gravel drive past the grain elevator, blue trailer. Dog in yard.
{vitals}. {pain}. Wound: {filler}
Equipment: {dev}. Oxygen vendor phone {phone}.
{car}Next visit {next}. {rn}  {lic}""",
        {
            "agency": g.facility(), "date": g.date(), "t1": g.time(), "t2": g.time(), "pt": g.name(pt),
            "age": g.age_phrase(), "addr": g.address(one_line=True), "vitals": g.vitals(), "pain": g.pain(),
            "filler": g.filler(), "dev": g.device(), "phone": g.phone(), "next": g.date(),
            "car": g.maybe(0.4, "Pt's {v} in the driveway; advised not to drive until cleared.\n", {"v": g.vehicle()}), "rn": g.clinician(rn),
            "lic": g.licence(),
        },
    )  # fmt: skip


def lab_callback(g: NoteContext) -> Frag:
    pt, rn = g.person(), g.person()
    return fill(
        """CRITICAL VALUE CALL-BACK
Lab called {time} on {date}: K {k} for {pt} (MRN {mrn}, acct {acct}), {room}.
Read back and verified with {tech} in the lab, ext {ext}. Notified {md} at {time2}, order for {med}.
{extra}{rn}""",
        {
            "time": g.time(), "date": g.date(), "k": str(g.rng.randint(60, 75) / 10), "pt": g.name(pt),
            "mrn": g.mrn(), "acct": g.account(), "room": g.room(), "tech": g.name(g.person()),
            "ext": str(g.rng.randint(2000, 7999)), "md": g.clinician(), "time2": g.time(), "med": g.med(),
            "extra": g.maybe(0.4, "Outpatient lab fax {f}; pt reached at home {p}.\n", {"f": g.fax(), "p": g.phone()}),
            "rn": g.clinician(rn),
        },
    )  # fmt: skip


def prior_authorisation(g: NoteContext) -> Frag:
    pt, md = g.person(), g.person()
    return fill(
        """PRIOR AUTHORIZATION REQUEST — fax to {payer} at {pfax}
Member name: {pt}   Member ID: {plan}   DOB: {dob}
Patient address: {addr}
Requested: CPAP (HCPCS E0601), AHI 34 on sleep study {date}. {code}.
Prescriber: {md}, {lic}, phone {phone}, fax {fax}
Facility: {fac}   Patient account {acct}
Submitted {date2} via {portal}""",
        {
            "payer": g.pick("Aetna", "Anthem", "WellCare", "Cigna", "Molina", "Medica"), "pfax": g.fax(),
            "pt": g.name(pt), "plan": g.plan(), "dob": g.dob(),
            "addr": g.address(one_line=True), "date": g.date(), "code": g.code(), "md": g.clinician(md),
            "lic": g.licence(), "phone": g.phone(), "fax": g.fax(), "fac": g.facility(), "acct": g.account(),
            "date2": g.date(), "portal": fill("{u}", {"u": g.url(pt)}) if g.chance(0.4) else Frag("Availity"),
        },
    )  # fmt: skip


def death_certificate(g: NoteContext) -> Frag:
    pt, md, inf = g.person(), g.person(), g.person()
    return fill(
        """CERTIFICATE OF DEATH (worksheet)
Decedent: {pt}   Sex: {sex}   SSN: {ssn}
Age: {age}   Date of birth: {dob}   Date of death: {dod}   Time 0{h}:{m}
Place of death: {fac}, {city}, {st}   Residence: {addr}
Informant: {inf}, {rel}, {iaddr}
Cause: (a) {ep} (b) aspiration pneumonia. Manner: Natural. Autopsy: No.
Certifier: {md}, {lic}   Date certified {dc}""",
        {
            "pt": g.name(pt), "sex": g.pick("F", "M"), "ssn": g.ssn(), "age": g.age(), "dob": g.dob(),
            "dod": g.date(), "h": str(g.rng.randint(1, 9)), "m": str(g.rng.randint(10, 59)), "fac": g.facility(),
            "city": g.city()[0], "st": g.pick("WI", "MN", "LA"), "addr": g.address(one_line=True),
            "inf": g.name(inf), "rel": g.pick("daughter", "son", "spouse", "nephew"), "iaddr": g.address(one_line=True),
            "ep": g.eponym(), "md": g.clinician(md), "lic": g.licence(), "dc": g.date(),
        },
    )  # fmt: skip


def device_clinic(g: NoteContext) -> Frag:
    pt, np_ = g.person(), g.person()
    return fill(
        """DEVICE CLINIC — REMOTE INTERROGATION {date}
{pt} (MRN {mrn}) — {dev}, implanted {imp} at {fac}.
Leads: RA {lead1}, RV {lead2}. Battery 8.5 yrs. AT/AF burden <1%. {vt}
Transmission received from home monitor IP {ip}. CHA2DS2-VASc 3.
Next remote {next}. {np}""",
        {
            "date": g.date(), "pt": g.name(pt), "mrn": g.mrn(), "dev": g.device(), "imp": g.date(),
            "fac": g.facility(), "lead1": fill("SN {s}", {"s": P(f"PJN{g.rng.randint(100000, 999999)}V", "DEVICE")}),
            "lead2": fill("serial {s}", {"s": P(f"BBL{g.rng.randint(100000, 999999)}R", "DEVICE")}),
            "vt": g.pick("No VT/VF.", "1 NSVT episode, 9 beats.", "Mode switch x3."), "ip": g.ip(),
            "next": g.date(), "np": g.clinician(np_),
        },
    )  # fmt: skip


def trauma_mvc(g: NoteContext) -> Frag:
    pt, officer = g.person(), g.person()
    return fill(
        """TRAUMA H&P — Level II activation {date} {time}
{pt}, {age}, restrained driver of {veh}, T-boned at {mph} mph on Hwy {hwy}. Airbags deployed.
Other vehicle: {veh2}. {officer_line}
GCS 15, FAST negative. CT: nondisplaced fractures of ribs 4-6, {lvl} transverse process fx.
{vitals}. EtOH 0.{etoh}. Tdap given.
Belongings incl. wallet with {lic} given to family.""",
        {
            "date": g.date(), "time": g.time(), "pt": g.name(pt), "age": g.age_phrase(), "veh": g.vehicle(),
            "mph": str(g.rng.randint(25, 70)), "hwy": str(g.rng.randint(12, 94)), "veh2": g.vehicle(),
            "officer_line": fill("Officer {o} of the county sheriff at bedside.", {"o": g.name(officer)}),
            "lvl": g.level(), "vitals": g.vitals(), "etoh": f"{g.rng.randint(0, 25):02d}", "lic": g.driver_licence(),
        },
    )  # fmt: skip


def access_audit(g: NoteContext) -> Frag:
    pt = g.person()
    rows = [
        fill(
            "{d} {t}  user {u}  {act}  from {ip}",
            {
                "d": g.date(),
                "t": g.time(),
                "u": g.name(g.person()),
                "act": g.pick("VIEW", "PRINT", "EXPORT", "EDIT"),
                "ip": g.ip(),
            },
        )
        for _ in range(g.rng.randint(2, 4))
    ]
    body = rows[0]
    for row in rows[1:]:
        body = fill("{a}\n{b}", {"a": body, "b": row})
    return fill(
        """PRIVACY OFFICE — EHR ACCESS REVIEW for {pt}, MRN {mrn}
Complaint received {date} from patient by email {email}.
{rows}
Finding: access by {who} not related to care. Referred to HR.""",
        {"pt": g.name(pt), "mrn": g.mrn(), "date": g.date(), "email": g.email(pt), "rows": body,
         "who": g.name(g.person())},
    )  # fmt: skip


def release_of_information(g: NoteContext) -> Frag:
    pt, att = g.person(), g.person()
    return fill(
        """AUTHORIZATION FOR RELEASE OF PROTECTED HEALTH INFORMATION
Patient: {pt}   DOB: {dob}   MRN: {mrn}   SSN (last 4): {ssn4}
Release records from {fac} to: {to}, {toaddr}
Fax: {fax}  Phone: {phone}
Purpose: {purpose}. Records: {dates}. Expires {exp}.
Mail copies to patient: {addr}
Signed {sig} on {date}""",
        {
            "pt": g.name(pt), "dob": g.dob(), "mrn": g.mrn(), "ssn4": P(f"{g.rng.randint(1, 9999):04d}", "SSN"),
            "fac": g.facility(), "to": fill("Law Office of {n}", {"n": g.name(att)}) if g.chance(0.5) else fill("{f}", {"f": g.facility()}),
            "toaddr": g.address(one_line=True),
            "fax": g.fax(), "phone": g.phone(), "purpose": g.pick("continuity of care", "legal", "disability claim", "personal"),
            "dates": fill("{a} through {b}", {"a": g.date(), "b": g.date()}), "exp": g.date(), "addr": g.address(one_line=True),
            "sig": g.name(pt), "date": g.date(),
        },
    )  # fmt: skip


def advance_directive(g: NoteContext) -> Frag:
    pt, agent, alt, md = g.person(), g.person(), g.person(), g.person()
    return fill(
        """POLST / GOALS OF CARE — {fac}
{pt}, {age}, DOB {dob}. Code status: DNR/DNI, comfort-focused, no feeding tube.
Health care agent: {agent} ({arel}), cell {ap}, {aemail}
Alternate: {alt}, {alp}
Discussed with {md} on {date}. Pt says "I'm {age2} and I've had a good run." {ep}.
Hospice: {hosp}, intake {hphone}.""",
        {
            "fac": g.facility(), "pt": g.name(pt), "age": g.age_phrase(), "dob": g.dob(), "agent": g.name(agent),
            "arel": g.pick("daughter", "son", "partner", "friend"), "ap": g.phone(), "aemail": g.email(agent),
            "alt": g.name(alt), "alp": g.phone(), "md": g.clinician(md), "date": g.date(), "age2": g.age(),
            "ep": g.eponym(), "hosp": g.facility(), "hphone": g.phone(),
        },
    )  # fmt: skip


def billing_statement(g: NoteContext) -> Frag:
    pt = g.person()
    return fill(
        """PATIENT STATEMENT   {fac}   Remit to: {remit}
Statement date {date}   Guarantor: {pt}   Account number: {acct}
{addr}
Service {svc}  {code}  Charges $1,248.00  Ins paid $902.17  You owe $345.83
Insurance: {payer} ID {plan}
Pay online at {url} or call {phone}. Questions: {email}""",
        {
            "fac": g.facility(), "remit": fill("{b}, {c}, {s} {z}", {"b": P(f"PO Box {g.rng.randint(10, 99999)}", "PO_BOX"),
                "c": g.city()[0], "s": g.pick("IL", "MO", "TN"), "z": P(f"{g.rng.randint(30000, 69999)}", "ZIP")}),
            "date": g.date(), "pt": g.name(pt), "acct": g.account(), "addr": g.address(), "svc": g.date(),
            "code": g.code(), "payer": g.pick("Medica", "Humana", "BCBS of Texas", "Ambetter"), "plan": g.plan(),
            "url": g.url(pt), "phone": g.phone(), "email": g.email(g.person(), clinician=True),
        },
    )  # fmt: skip


def operative_note(g: NoteContext) -> Frag:
    pt, surg, asst, anes = g.person(), g.person(), g.person(), g.person()
    return fill(
        """OPERATIVE REPORT   {fac}   Date of surgery: {date}
Patient: {pt}   MRN: {mrn}
Surgeon: {surg}   Assistant: {asst}   Anesthesia: {anes} (general ETT, ASA III)
Procedure: L4-L5 posterior lumbar fusion with instrumentation.
Implants: pedicle screws 6.5 x 45 mm x4; {dev}. EBL 350 mL. Counts correct x2.
{filler}
Dictated {d2} by {surg_short}""",
        {
            "fac": g.facility(), "date": g.date(), "pt": g.name(pt), "mrn": g.mrn(), "surg": g.clinician(surg),
            "asst": g.clinician(asst), "anes": g.clinician(anes), "dev": g.device(), "filler": g.filler(),
            "d2": g.date(), "surg_short": fill("Dr. {s}", {"s": g.sur(surg)}),
        },
    )  # fmt: skip


def care_coordination_email(g: NoteContext) -> Frag:
    pt, cm, sender = g.person(), g.person(), g.person()
    return fill(
        """From: {cm_email}
To: {s_email}
Sent: {date} {time}
Subject: d/c planning {init}

Hi {s_given}, {pt} ({age}) in {room} is medically ready. Son lives in {city}, {st} and will pick up in his
{veh}. New DME delivered to {addr}. Patient portal: {url}. Nicknamed "{nick}" by staff.
Thanks, {cm}
{cm_phone}""",
        {
            "cm_email": g.email(cm, clinician=True), "s_email": g.email(sender, clinician=True), "date": g.date(),
            "time": g.time(), "init": P(f"{pt.given[0]}{pt.surname[0]}", "NAME"), "s_given": g.given(sender),
            "pt": g.name(pt), "age": g.age_phrase(), "room": g.room(), "city": g.city()[0],
            "st": g.pick("WI", "TX", "GA"), "veh": g.vehicle(), "addr": g.address(one_line=True), "url": g.url(pt),
            "nick": P(g.rng.choice(pools.NICKNAMES), "NAME"),
            "cm": g.clinician(cm), "cm_phone": g.phone(),
        },
    )  # fmt: skip


def face_sheet(g: NoteContext) -> Frag:
    pt, guar, emp = g.person(), g.person(), g.person()
    return fill(
        """REGISTRATION FACE SHEET   {fac}   Printed {date} {time}
PATIENT: {pt}   SEX: {sex}   DOB: {dob}   MRN: {mrn}   HAR: {acct}
SSN: {ssn}   {dl}   Language: {lang}   Marital: {mar}
ADDRESS: {addr}
HOME PH: {hp}   CELL: {cp}   E-MAIL: {email}
Web/portal on file: {portal}
GUARANTOR: {guar} ({rel})   GUAR PH: {gp}
PRIMARY INS: {payer}   SUBSCRIBER ID: {plan}   GROUP #: see card
EMPLOYER: county highway dept, supervisor {emp}
ADMIT DX: {ep} ({code})   ATTENDING: {att}   {room}""",
        {
            "fac": g.facility(), "date": g.date(), "time": g.time(), "pt": g.name(pt), "sex": g.pick("F", "M", "X"),
            "dob": g.dob(), "mrn": g.mrn(), "acct": g.account(), "ssn": g.ssn(),
            "dl": g.driver_licence() if g.chance(0.6) else Frag("DL: none on file"),
            "lang": g.pick("English", "Spanish", "Somali", "Vietnamese", "Hmong", "Arabic", "ASL"),
            "mar": g.pick("M", "S", "W", "D"), "addr": g.address(one_line=True), "hp": g.phone(), "cp": g.phone(),
            "email": g.email(pt), "portal": fill("{u}", {"u": g.url(pt)}) if g.chance(0.6) else Frag("declined"),
            "guar": g.name(guar), "rel": g.pick("self", "spouse", "parent", "child"), "gp": g.phone(),
            "payer": g.pick("Medicare A/B", "Medicaid", "BCBS PPO", "Quartz", "Aetna Medicare"), "plan": g.plan(),
            "emp": g.name(emp), "ep": g.eponym(), "code": g.code(), "att": g.clinician(), "room": g.room(),
        },
    )  # fmt: skip


def telehealth_visit(g: NoteContext) -> Frag:
    pt, md, helper = g.person(), g.person(), g.person()
    return fill(
        """TELEHEALTH VIDEO VISIT — {fac}   {date}
Patient {pt} joined from home via {link}; connection from {ip} (video froze twice, reconnected from {ip2}).
Patient location confirmed for licensure: {addr}. Backup number if dropped: {phone}.
Assisted by {rel} {helper}. Visit type: follow-up, {ep}. {filler}
Consent for telehealth obtained verbally. Total time 22 min. {md}""",
        {
            "fac": g.facility(), "date": g.date(), "pt": g.name(pt), "link": g.url(pt), "ip": g.ip(), "ip2": g.ip(),
            "addr": g.address(one_line=True), "phone": g.phone(), "rel": g.pick("granddaughter", "home aide", "husband", "neighbor"),
            "helper": g.typed(helper), "ep": g.eponym(), "filler": g.filler(), "md": g.clinician(md),
        },
    )  # fmt: skip


def unit_census(g: NoteContext) -> Frag:
    """A charge nurse's census: surname-first, rooms, ages, one-line problems."""
    rows = []
    for _ in range(g.rng.randint(4, 7)):
        p = g.person()
        name = P(f"{p.surname.upper()}, {p.given[0]}" if g.chance(0.5) else f"{p.surname}, {p.given}", "NAME")
        rows.append(
            fill(
                "{room}  {n}  {age}{sex}  {prob}  {code}  adm {adm}",
                {
                    "room": f"{g.rng.randint(401, 439)}-{g.pick('A', 'B', '1', '2')}",
                    "n": name,
                    "age": g.age(),
                    "sex": g.pick("F", "M"),
                    "prob": g.pick(
                        "CHF exac", "PNA", "s/p fall, hip fx", "DKA", "COPD", "sepsis ?UTI", "GI bleed"
                    ),
                    "code": g.pick("FULL", "DNR", "DNR/DNI", "LIMITED"),
                    "adm": g.date(),
                },
            )
        )
    body = rows[0]
    for row in rows[1:]:
        body = fill("{a}\n{b}", {"a": body, "b": row})
    charge = g.person()
    return fill(
        """4 WEST CENSUS {date} {shift}   Charge: {charge}   Unit phone {phone}
RM    PATIENT          AGE/SEX  PROBLEM  CODE  ADMIT
{rows}
Isolation: {iso} (MRSA). Pending d/c: {dc}. {score}.""",
        {
            "date": g.date(), "shift": g.pick("days", "nights", "0700-1930"), "charge": g.name(charge), "phone": g.phone(),
            "rows": body, "iso": f"{g.rng.randint(401, 439)}", "dc": f"{g.rng.randint(401, 439)}", "score": g.score(),
        },
    )  # fmt: skip


GENRES: dict[str, Callable[[NoteContext], Frag]] = {
    "discharge summary": discharge_summary,
    "ED triage": ed_triage,
    "nursing flowsheet": nursing_flowsheet,
    "radiology": radiology_report,
    "pathology": pathology_report,
    "pharmacy": pharmacy_note,
    "portal message": portal_message,
    "telephone encounter": telephone_encounter,
    "referral letter": referral_letter,
    "consent form": consent_form,
    "social work": social_work_note,
    "home health": home_health,
    "lab call-back": lab_callback,
    "prior authorisation": prior_authorisation,
    "death certificate": death_certificate,
    "device clinic": device_clinic,
    "trauma H&P": trauma_mvc,
    "EHR access audit": access_audit,
    "release of information": release_of_information,
    "advance directive": advance_directive,
    "billing statement": billing_statement,
    "operative report": operative_note,
    "care coordination email": care_coordination_email,
    "registration face sheet": face_sheet,
    "telehealth visit": telehealth_visit,
    "unit census": unit_census,
}

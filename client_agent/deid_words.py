"""Word lists the de-identifier's patterns and filters use, each from a general source, none from a test set.

Hospital departments and specialties (after the American Board of Medical Specialties' list of
specialties, with common ward and service names), clinicians' roles, the street words that come before a
street's name in Spanish, Portuguese, French and Italian addresses, and one-word places that are not a
facility's name.
"""

from __future__ import annotations

import regex


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A "Cardiology Device Clinic" or "Home Health Skilled Nursing" made of these alone names a service, not a
# place that identifies anyone.
DEPARTMENT_WORDS = _words(
    """
    allergy anesthesia anesthesiology audiology behavioral breast cardiac cardiology cardiothoracic care
    child colorectal critical dental dentistry dermatology device devices diabetes dialysis emergency
    endocrine endocrinology endoscopy ent family fertility gastroenterology general genetics geriatric
    geriatrics gynecology hand health heart hematology hepatology home hospice hospitalist icu imaging
    immunology infectious infusion intensive internal interventional lab laboratory maternity medical
    medicine memory mental neonatal neurology neurosurgery nephrology nuclear nursing nutrition
    obstetrics occupational oncology ophthalmology optometry oral orthopaedic orthopaedics orthopedic
    orthopedics otolaryngology outpatient inpatient pacemaker pain palliative pathology pediatric
    pediatrics paediatric paediatrics pharmacy physical plastic podiatry primary psychiatry psychology
    pulmonary pulmonology radiation radiology rehabilitation rehab renal respiratory rheumatology
    skilled sleep social speech spine sports surgery surgical therapy thoracic transplant trauma urgent
    urology vascular women's womens wound ambulatory day unit department division service services
    center centre clinic clinics program team ward floor adult senior living assisted urgent walk-in
    walk
    """
)
# Words of a clinical note's section and document titles (after the section and document names of HL7
# C-CDA and common note types): a line of these is a heading, not a facility on a letterhead.
SECTION_WORDS = _words(
    """
    chief complaint complaints history present illness assessment plan review systems physical exam
    examination hospital course impression findings indication indications procedure procedures
    medication medications allergies allergy results labs vitals vital signs summary note notes report
    consult consultation progress discharge admission instructions diagnosis diagnoses problem problems
    subjective objective past family social surgical medical encounter visit telephone triage intake
    operative pathology radiology letter referral follow-up followup clinic addendum disposition hpi ros
    """
)
# Roles written before a person's name ("social worker siobhan ..."): they end a lower-case name's run.
ROLE_NOUNS = _words(
    "worker manager coordinator navigator aide chaplain liaison interpreter translator educator counselor "
    "counsellor dietitian technician tech clerk"
)
# A clinician's role: "Consultant", "Neurologist", "Psychiatrist", "Pediatrician", "Paramedic".
CLINICIAN = regex.compile(
    r"\p{L}+(?:olog|iatr)ists?|\p{L}+icians?|paramedics?|consultants?|attendings?|residents?|registrars?|"
    r"surgeons?|nurses?|practitioners?|specialists?|therapists?|fellows?|interns?|pharmacists?|midwi(?:fe|ves)"
)
# One-word places that are not facilities after "at" or "to" ("at Home", "went to Work").
COMMON_PLACES = _words(
    "home work school church bed bedside night noon rest baseline office college university camp jail prison "
    "court shelter lunch dinner breakfast"
)
# Street words that come before the name in Spanish, Portuguese, French and Italian addresses ("Calle del
# Sol", "Rua das Flores", "Rue de la Paix", "Via Roma"), and the particles inside such names.
ROMANCE_STREET = (
    r"(?:Calle|Avenida|Avda\.?|Av\.|Camino|Paseo|Carrera|Carretera|Callej[oó]n|Calzada|Ronda|Rambla|Plaza|"
    r"Rua|Travessa|Estrada|Alameda|Largo|Rue|Chemin|All[ée]e|Quai|Via|Viale|Corso|Piazza|Vicolo)"
)
STREET_PARTICLE = (
    r"(?:de|del|de[ \t]+la|de[ \t]+los|de[ \t]+las|la|las|los|el|do|da|dos|das|du|des|di|della|dei)"
)
# Large US hospitals and health systems often named bare, without "Hospital" or "Medical Center" ("seen at
# Hopkins", "films from Cedars"), from public lists of the largest US hospitals and systems; "|" joins the
# words of one name. Only names that are not English words ("Duke", "Rush", "Temple", "Providence" stay
# out), matched case-sensitively.
WELL_KNOWN_HOSPITALS = tuple(
    name.replace("|", " ")
    for name in sorted(
        _words(
            """
    Johns|Hopkins Hopkins Mayo|Clinic Mayo Mass|General Massachusetts|General MGH Brigham|and|Women's
    Brigham Cedars-Sinai Cedars|Sinai Cedars Mount|Sinai Mt.|Sinai NewYork-Presbyterian Sloan|Kettering
    Memorial|Sloan|Kettering MSKCC MD|Anderson Dana-Farber Dana|Farber Beth|Israel|Deaconess Beth|Israel
    Parkland Bellevue Harborview Grady Kaiser|Permanente Kaiser Intermountain Geisinger Ochsner Vanderbilt
    Emory Baylor|Scott|and|White Barnes-Jewish Barnes|Jewish Henry|Ford Montefiore Maimonides Lenox|Hill
    Hackensack Christiana ChristianaCare Inova Sentara Carilion UPMC Yale|New|Haven Yale-New|Haven
    Dartmouth-Hitchcock Lahey Baystate Kaleida Erlanger Piedmont Wellstar Novant Prisma|Health Moffitt
    Shands Froedtert Hennepin Allina Essentia Sanford|Health Avera Scripps Loma|Linda Hoag Kapiolani
    Nemours Lurie Stroger Jacobi Northwell MultiCare PeaceHealth OhioHealth MedStar WakeMed Beaumont
    Sutter UCSF UCHealth NYU|Langone Langone Kettering|Health Fairview Atrium|Health Advocate|Aurora
    """
        )
    )
)

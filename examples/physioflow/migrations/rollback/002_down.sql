-- 002_down: undo 002_updated_at_trigger. Triggers first, then the function
-- (later migrations' triggers on it are gone by the time this runs).
DROP TRIGGER insurance_info_set_updated_at ON insurance_info;
DROP TRIGGER therapists_set_updated_at ON therapists;
DROP TRIGGER clinics_set_updated_at ON clinics;
DROP TRIGGER visits_set_updated_at ON visits;
DROP TRIGGER patients_set_updated_at ON patients;
DROP FUNCTION set_updated_at();

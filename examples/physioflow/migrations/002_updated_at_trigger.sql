-- 002_updated_at_trigger: keep updated_at current on every UPDATE.
--
-- One shared trigger function; later migrations attach it to their own
-- tables. The WHEN clause skips no-op updates (UPDATE ... SET x = x), so
-- updated_at only moves when a row really changed.

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS
    'BEFORE UPDATE row trigger: sets NEW.updated_at to the transaction timestamp.';

CREATE TRIGGER patients_set_updated_at
    BEFORE UPDATE ON patients
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER visits_set_updated_at
    BEFORE UPDATE ON visits
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER clinics_set_updated_at
    BEFORE UPDATE ON clinics
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER therapists_set_updated_at
    BEFORE UPDATE ON therapists
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER insurance_info_set_updated_at
    BEFORE UPDATE ON insurance_info
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

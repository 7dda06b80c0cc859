-- 001_down: undo 001_base. Reverse dependency order; no CASCADE, so an
-- object a later migration forgot to remove makes this fail loudly.
DROP TABLE insurance_info;
DROP TABLE visits;
DROP TABLE patients;
DROP TABLE therapists;
DROP TABLE clinics;

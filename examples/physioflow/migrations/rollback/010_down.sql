-- 010_down: undo 010_medical_terms (indexes and seed rows go with the table).
DROP TABLE medical_terms;

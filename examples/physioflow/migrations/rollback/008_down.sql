-- 008_down: undo 008_clinical_protocols (seed rows go with the tables).
DROP TABLE protocol_steps;
DROP TABLE clinical_protocols;

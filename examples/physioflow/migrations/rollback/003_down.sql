-- 003_down: undo 003_treatment_plans (triggers and indexes go with the tables).
DROP TABLE treatment_goals;
DROP TABLE treatment_plans;

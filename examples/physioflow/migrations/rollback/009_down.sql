-- 009_down: undo 009_discharge_planning.
DROP TABLE discharge_criteria;
DROP TABLE discharge_plans;

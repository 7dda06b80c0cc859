-- 006_down: undo 006_outcome_measures. Dropping the partitioned parent drops
-- its partitions, partitioned indexes and trigger; seed rows go with the
-- library table.
DROP TABLE outcome_measures;
DROP FUNCTION outcome_measures_check_score();
DROP TABLE outcome_measure_library;

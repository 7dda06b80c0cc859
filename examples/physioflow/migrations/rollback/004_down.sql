-- 004_down: undo 004_appointments.
DROP TABLE appointments;

-- 007_down: undo 007_billing. Tables in reverse dependency order (seed rows of
-- pt_service_codes go with the table), then the enum types they used.
DROP TABLE payments;
DROP TABLE invoice_items;
DROP TABLE invoices;
DROP TABLE pt_service_codes;
DROP TYPE payment_method;
DROP TYPE invoice_status;

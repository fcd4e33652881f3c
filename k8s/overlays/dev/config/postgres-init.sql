-- One database per service (database-per-service). Runs once, on the first
-- start of an empty data volume. Each service also creates its own database at
-- start when it is missing; creating them here keeps the stack independent of
-- that and of the order in which the services start.
CREATE DATABASE users;
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE inventory;

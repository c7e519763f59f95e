-- welfare-exchange: the two databases of the one PostgreSQL server, each with its own role.
--
--   * Airflow metadata (also the Celery result backend), owned by the Airflow role;
--   * the project database (protocol registry, delivery ledger, audit trail), owned by the
--     project role.
--
-- Neither role is a superuser, and neither can connect to the other's database: the
-- personal-data side (project DB) and the orchestration side (Airflow metadata) stay apart.
--
-- Run by docker/postgres/initdb.sh with psql variables (never literal secrets in this file):
--   airflow_db, airflow_user, airflow_password, project_db, project_user, project_password
-- Idempotent: safe to run again (it also re-sets the passwords, which is how they rotate).
\set ON_ERROR_STOP on

-- Roles -------------------------------------------------------------------------------
SELECT format('CREATE ROLE %I LOGIN', :'airflow_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'airflow_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'airflow_user', :'airflow_password') \gexec

SELECT format('CREATE ROLE %I LOGIN', :'project_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'project_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'project_user', :'project_password') \gexec

-- Databases (CREATE DATABASE cannot run in a transaction: psql runs each \gexec on its own)
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'airflow_db', :'airflow_user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'airflow_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'project_db', :'project_user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'project_db') \gexec

-- Only its owner may connect to a database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'airflow_db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'project_db') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'airflow_db', :'airflow_user') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'project_db', :'project_user') \gexec

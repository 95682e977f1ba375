/*
 * ownconn_no_slot (ownconn.h): which refusals of the shim's own
 * connection are worth waiting for.  The texts are the first lines libpq
 * gives for the server's messages (PostgreSQL 13 to 17).
 */
#include <criterion/criterion.h>

#include "ownconn.h"

#define SOCK "connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  "

Test(ownconn, a_full_server_is_worth_waiting_for)
{
    cr_assert(ownconn_no_slot(SOCK "sorry, too many clients already"));
    cr_assert(ownconn_no_slot(SOCK "too many connections for role \"app\""));
    cr_assert(ownconn_no_slot(SOCK "too many connections for database \"shop\""));
    cr_assert(ownconn_no_slot(SOCK "remaining connection slots are reserved for non-replication "
                                   "superuser connections"));
    cr_assert(ownconn_no_slot(SOCK "remaining connection slots are reserved for roles with the "
                                   "SUPERUSER attribute"));
    cr_assert(ownconn_no_slot("connection to server at \"10.0.0.5\", port 5432 failed: FATAL:  "
                              "sorry, too many clients already"));
}

Test(ownconn, other_failures_are_not)
{
    cr_assert_not(ownconn_no_slot(NULL));
    cr_assert_not(ownconn_no_slot(""));
    cr_assert_not(ownconn_no_slot(SOCK "password authentication failed for user \"app\""));
    cr_assert_not(ownconn_no_slot(SOCK "database \"shop\" does not exist"));
    cr_assert_not(ownconn_no_slot(SOCK "the database system is starting up"));
    cr_assert_not(ownconn_no_slot(SOCK "terminating connection due to administrator command"));
    cr_assert_not(ownconn_no_slot("connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: "
                                  "No such file or directory"));
    cr_assert_not(ownconn_no_slot("out of memory reading the connection's parameters"));
    /* a translated server message reads as any other failure */
    cr_assert_not(ownconn_no_slot(SOCK "Entschuldigung, schon zu viele Verbindungen"));
}

# Part of `cmake --install` (and of CPack) for the "server" component,
# included by the install(CODE) in packaging/CMakeLists.txt, which sets the
# SM_* variables used here. Writes, for the prefix of this install:
#
#   <sysconfdir>/safemessenger/safemessenger.conf  the default configuration,
#       only if no file is there: an operator's configuration is never
#       overwritten (the new default is still installed beside the docs,
#       see below, to compare with);
#   <datadir>/safemessenger/safemessenger.conf     the same default, always;
#   <unitdir>/safemessenger.service                the systemd unit, always.
#
# The configuration is conf/safemessenger.conf with its four paths made
# absolute: the key and the database under SM_STATE_DIR, plugins.dir the
# installed plugin directory, web.root the installed web client. A path
# that cannot be found in the source file stops the install rather than
# ship a configuration that points into a build tree.
include("${CMAKE_CURRENT_LIST_DIR}/dirs.cmake")

sm_sysconfdir(sm_confdir "${CMAKE_INSTALL_PREFIX}" "${SM_SYSCONFDIR}")
sm_under_prefix(sm_bindir "${CMAKE_INSTALL_PREFIX}" "${SM_BINDIR}")
sm_under_prefix(sm_plugindir "${CMAKE_INSTALL_PREFIX}" "${SM_LIBDIR}/safemessenger/plugins")
sm_under_prefix(sm_datadir "${CMAKE_INSTALL_PREFIX}" "${SM_DATADIR}/safemessenger")
sm_under_prefix(sm_unitdir "${CMAKE_INSTALL_PREFIX}" "${SM_UNIT_DIR}")
sm_under_prefix(SM_DOCDIR "${CMAKE_INSTALL_PREFIX}" "${SM_DATADIR}/doc/safemessenger")
set(sm_confdir "${sm_confdir}/safemessenger")
set(sm_conf "${sm_confdir}/safemessenger.conf")

# Generated files go to a directory of their own per destination, so that
# two installs from one build tree at once (tests) do not share them;
# removed at the end.
string(MD5 sm_tag "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(sm_work "${SM_WORK_DIR}/${sm_tag}")
file(MAKE_DIRECTORY "${sm_work}")

file(READ "${SM_CONF_SOURCE}" sm_text)
function(sm_replace_line pattern replacement)
  # Exactly one match (no lists here: the lines hold semicolons).
  string(REGEX MATCH "${pattern}" first "${sm_text}")
  set(second "")
  if(NOT first STREQUAL "")
    string(FIND "${sm_text}" "${first}" at)
    string(LENGTH "${first}" len)
    math(EXPR after "${at} + ${len}")
    string(SUBSTRING "${sm_text}" ${after} -1 rest)
    string(REGEX MATCH "${pattern}" second "${rest}")
  endif()
  if(first STREQUAL "" OR NOT second STREQUAL "")
    message(FATAL_ERROR "${SM_CONF_SOURCE}: expected exactly one line matching '${pattern}'")
  endif()
  string(REGEX REPLACE "${pattern}" "${replacement}" text "${sm_text}")
  set(sm_text "${text}" PARENT_SCOPE)
endfunction()
sm_replace_line("\n  key_file = \"[^\"\n]*\";" "\n  key_file = \"${SM_STATE_DIR}/server_key.pem\";")
sm_replace_line("\n  database = \"[^\"\n]*\";" "\n  database = \"${SM_STATE_DIR}/safemessenger.db\";")
sm_replace_line("\n  dir = \"[^\"\n]*\";" "\n  dir = \"${sm_plugindir}\";")
string(REGEX REPLACE "\n  # Where plugin \\.so files are looked up[^\n]*\n(  #[^\n]*\n)*"
       "\n  # Where plugin .so files are looked up: the installed plugins.\n" sm_text "${sm_text}")
sm_replace_line("\n  root = \"[^\"\n]*\";" "\n  root = \"${sm_datadir}/web\";")
string(REGEX REPLACE "\n  # The directory served[^\n]*\n(  #[^\n]*\n)*"
       "\n  # The directory served: the installed web client (symbolic links and\n  # hidden files in it are never served).\n" sm_text "${sm_text}")
# The source file's header speaks of the build tree; the installed one
# says where it is and what uses it.
string(FIND "${sm_text}" "\nserver:" sm_body_at)
if(sm_body_at LESS 0)
  message(FATAL_ERROR "${SM_CONF_SOURCE}: no 'server:' section")
endif()
string(SUBSTRING "${sm_text}" ${sm_body_at} -1 sm_body)
set(sm_text "# SafeMessenger server configuration (libconfig syntax).
#
# Installed as ${sm_conf}.
# safemessenger.service runs ${sm_bindir}/safemessenger-server
# on it as the user safemessenger. The key and the database live in
# ${SM_STATE_DIR} (the unit's StateDirectory). `cmake --install`
# never overwrites this file, and dpkg never replaces it once changed; the
# current default is ${sm_datadir}/safemessenger.conf.
#
# Check a changed file with
#     safemessenger-server -c ${sm_conf} --check-config
# then `systemctl restart safemessenger`. Every key is described in
# ${SM_DOCDIR}/OPERATIONS.md; a missing key keeps its default,
# an unknown key is an error.
#
# Integers beyond +-2147483647 need an L suffix (5000000000L): the libconfig
# 1.5 shipped with Debian 12 silently truncates them otherwise.
${sm_body}")
file(WRITE "${sm_work}/safemessenger.conf" "${sm_text}")

set(SM_SERVER "${sm_bindir}/safemessenger-server")
set(SM_CONFIG "${sm_conf}")
configure_file("${SM_UNIT_TEMPLATE}" "${sm_work}/safemessenger.service" @ONLY)

set(sm_perm PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL DESTINATION "${sm_datadir}" TYPE FILE ${sm_perm}
     FILES "${sm_work}/safemessenger.conf")
file(INSTALL DESTINATION "${sm_unitdir}" TYPE FILE ${sm_perm}
     FILES "${sm_work}/safemessenger.service")
if(EXISTS "$ENV{DESTDIR}${sm_conf}")
  message(STATUS "Keeping: $ENV{DESTDIR}${sm_conf} (exists; the new default is "
                 "$ENV{DESTDIR}${sm_datadir}/safemessenger.conf)")
else()
  file(INSTALL DESTINATION "${sm_confdir}" TYPE FILE ${sm_perm}
       FILES "${sm_work}/safemessenger.conf")
endif()
file(REMOVE_RECURSE "${sm_work}")

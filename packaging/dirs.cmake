# GNUInstallDirs' rule for the configuration directory, applied to a prefix
# known only at install or packaging time: /usr -> /etc, /opt/X -> /etc/opt/X,
# anything else -> PREFIX/etc. An absolute SYSCONFDIR is taken as it is.
# Included by install_files.cmake (cmake --install) and by
# cpack_project_config.cmake (the .deb's conffiles).
function(sm_sysconfdir out prefix sysconfdir)
  if(IS_ABSOLUTE "${sysconfdir}")
    set(dir "${sysconfdir}")
  elseif(prefix MATCHES "^/usr/?$")
    set(dir "/${sysconfdir}")
  elseif(prefix MATCHES "^/opt/(.+[^/])/?$" AND sysconfdir STREQUAL "etc")
    set(dir "/etc/opt/${CMAKE_MATCH_1}")
  else()
    string(REGEX REPLACE "/$" "" p "${prefix}")
    set(dir "${p}/${sysconfdir}")
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

# PATH under PREFIX unless it is absolute.
function(sm_under_prefix out prefix path)
  if(IS_ABSOLUTE "${path}")
    set(${out} "${path}" PARENT_SCOPE)
  else()
    string(REGEX REPLACE "/$" "" p "${prefix}")
    set(${out} "${p}/${path}" PARENT_SCOPE)
  endif()
endfunction()

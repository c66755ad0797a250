# The <msiv2/...> header namespace.
#
# A consumer includes only <msiv2/...>; <msiv2/msiv2.hpp> (source: actors/msiv2.hpp) gives the
# whole public API. The public headers are the ones msiv2.hpp reaches, transitively; they
# include each other as "msiv2/<folder>/<file>.hpp", so the same text works in the source tree
# and installed under <prefix>/include/msiv2/<folder>/. In the build tree,
# ${MSIV2_INCLUDE_DIR}/msiv2/<folder> is a symlink to the source folder. Sources and private
# headers may keep their "<folder>/<file>.hpp" includes (the source root stays on the build's
# include path).
#
# Sets MSIV2_INCLUDE_DIR and MSIV2_PUBLIC_HEADERS (paths relative to the source root) and
# defines msiv2_public_includes(target).

set(MSIV2_INCLUDE_DIR ${CMAKE_BINARY_DIR}/include)
set(MSIV2_HEADER_FOLDERS actors messages io platform)
file(MAKE_DIRECTORY ${MSIV2_INCLUDE_DIR}/msiv2)
foreach(folder ${MSIV2_HEADER_FOLDERS})
  file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${folder} ${MSIV2_INCLUDE_DIR}/msiv2/${folder} SYMBOLIC)
endforeach()
file(CREATE_LINK ${PROJECT_SOURCE_DIR}/actors/msiv2.hpp ${MSIV2_INCLUDE_DIR}/msiv2/msiv2.hpp
     SYMBOLIC)

# Walk the includes from msiv2.hpp. A public header that includes one of ours without the
# msiv2/ prefix would build here and break every installed copy: refuse it now.
set(MSIV2_PUBLIC_HEADERS)
set(todo actors/msiv2.hpp)
while(todo)
  list(POP_FRONT todo header)
  if(header IN_LIST MSIV2_PUBLIC_HEADERS)
    continue()
  endif()
  list(APPEND MSIV2_PUBLIC_HEADERS ${header})
  # Re-run this walk whenever a public header changes.
  set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${PROJECT_SOURCE_DIR}/${header})
  file(STRINGS ${PROJECT_SOURCE_DIR}/${header} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(line ${lines})
    if(NOT line MATCHES "#[ \t]*include[ \t]*\"([^\"]*)\"")
      continue()
    endif()
    set(included ${CMAKE_MATCH_1})
    set(target "")
    if(included MATCHES "^msiv2/(([a-z_]+)/[A-Za-z0-9_]+\\.hpp)$")
      set(target ${CMAKE_MATCH_1})
      if(NOT CMAKE_MATCH_2 IN_LIST MSIV2_HEADER_FOLDERS OR NOT EXISTS ${PROJECT_SOURCE_DIR}/${target})
        set(target "")
      endif()
    endif()
    if(target STREQUAL "")
      message(FATAL_ERROR
        "${header} is a public header (msiv2.hpp reaches it), so it is installed under "
        "include/msiv2/ and must include our headers as \"msiv2/<folder>/<file>.hpp\" "
        "(an existing file of actors, messages, io or platform); it has "
        "'#include \"${included}\"'. Write \"msiv2/${included}\" (or include a system "
        "header with <>).")
    endif()
    list(APPEND todo ${target})
  endforeach()
endwhile()
list(SORT MSIV2_PUBLIC_HEADERS)

# The include path of a folder's library: the source root and the msiv2/ tree in the build,
# <prefix>/include once installed.
function(msiv2_public_includes target)
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${MSIV2_INCLUDE_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
endfunction()

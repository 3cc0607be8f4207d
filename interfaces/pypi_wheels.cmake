# Shared by the message packages in interfaces/ (built into a venv by scripts/build_interfaces.sh):
# the ROS PyPI wheels' exported targets name the include folder of the interpreter they were built
# with (/opt/python/...); point them at this interpreter's headers instead.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development)
foreach(dep std_msgs builtin_interfaces)
  set(tgt ${dep}::${dep}__rosidl_generator_py)
  if(TARGET ${tgt})
    set_target_properties(${tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${Python3_INCLUDE_DIRS}")
  endif()
endforeach()

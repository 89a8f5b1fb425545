-- Argo CD health of an ImagingTenant (imaging.tenancy.dev/v1alpha1), from the status the
-- operator writes: status.observedGeneration, and conditions with type, status, reason,
-- message and observedGeneration. Ready is True when everything is in place; Reconciling is
-- True while work or a retry is pending; Stalled is True when a person must act (a conflict,
-- access denied, invalid settings).
--
--   no status, or a status older than the spec   Progressing
--   Reconciling True                              Progressing, with its message
--   Stalled True                                  Degraded, with its message
--   Ready True                                    Healthy
--   otherwise                                     Progressing, with Ready's message
--
-- Argo CD gives health scripts the base and table libraries only: no string functions here.
-- Installed by argocd-cm-imagingtenant-health.yaml; tests/offline/gitops_health.rs runs it in
-- gopher-lua over the recorded statuses of tests/fixtures/health/.

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the tenant's status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled: a person must act")
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the tenant to become Ready")
return hs

variable "region" {
  description = "AWS region for everything this stack creates."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits and dashes)."
  type        = string
  default     = "wms"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- GitHub: who may assume the workflow roles -----------------------------------------------

variable "github_repository" {
  description = "The model repository whose workflows assume the roles, as OWNER/NAME."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must be OWNER/NAME, e.g. acme/water-meter-model."
  }
}

variable "github_branch" {
  description = "Branch whose pushes may assume the train role (data push, MLflow promote)."
  type        = string
  default     = "main"
}

variable "train_on_pull_requests" {
  description = "Let pull_request jobs of the repository assume the train role (data pull for training on PRs). GitHub gives pull requests from forks no OIDC token, so only same-repository branches can."
  type        = bool
  default     = true
}

variable "deploy_environment" {
  description = "GitHub environment whose jobs may assume the deploy role; protect it with required reviewers or a branch rule."
  type        = string
  default     = "production"
}

variable "github_oidc_provider_arn" {
  description = "ARN of an existing token.actions.githubusercontent.com OIDC provider (an account has at most one); empty creates it."
  type        = string
  default     = ""
}

# --- Network ---------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into one public and one private subnet per availability zone."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Number of availability zones to spread subnets, nodes and the database over."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be 2 to 4 (EKS and RDS need subnets in at least two zones)."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the VPC flow log, EKS control plane and RDS log groups."
  type        = number
  default     = 365
}

# --- EKS -------------------------------------------------------------------------------------

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.33"
}

variable "cluster_public_access_cidrs" {
  description = "CIDRs that may reach the EKS API endpoint over the internet (GitHub-hosted runners deploy through it). Authentication is IAM either way; narrow this to your runners' egress or use self-hosted runners in the VPC."
  type        = list(string)

  validation {
    condition     = length(var.cluster_public_access_cidrs) > 0
    error_message = "cluster_public_access_cidrs must list at least one CIDR (see terraform.tfvars.example)."
  }
}

variable "on_demand_instance_types" {
  description = "Instance types of the on-demand node group (the floor that keeps promoted versions serving)."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "on_demand_size" {
  description = "min, desired and max nodes of the on-demand group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 1, desired = 2, max = 4 }
}

variable "spot_instance_types" {
  description = "Instance types of the spot node group; several similar types keep spot capacity available."
  type        = list(string)
  default     = ["m6i.large", "m6a.large", "m5.large", "m5a.large"]
}

variable "spot_size" {
  description = "min, desired and max nodes of the spot group (burst capacity for the autoscalers)."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 0, desired = 1, max = 6 }
}

# --- ECR -------------------------------------------------------------------------------------

variable "ecr_repository_name" {
  description = "ECR repository the build-image action pushes serving images to."
  type        = string
  default     = "wms/water-meters"
}

variable "ecr_keep_untagged" {
  description = "How many untagged images (previous pushes of a moved tag, partial pushes) ECR keeps."
  type        = number
  default     = 10
}

# --- MLflow database -------------------------------------------------------------------------

variable "mlflow_db_instance_class" {
  description = "RDS instance class of the MLflow MySQL database."
  type        = string
  default     = "db.t4g.small"
}

variable "mlflow_db_allocated_storage" {
  description = "Initial storage of the MLflow database in GiB (grows automatically up to 5x)."
  type        = number
  default     = 20
}

variable "mlflow_db_multi_az" {
  description = "Standby replica of the MLflow database in a second zone."
  type        = bool
  default     = true
}

variable "mlflow_db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "mlflow_namespace" {
  description = "Kubernetes namespace of the MLflow release (infra/helm/mlflow/values.yaml)."
  type        = string
  default     = "mlflow"
}

variable "mlflow_service_account" {
  description = "Service account of the MLflow pods; EKS Pod Identity gives it the MLflow S3 role."
  type        = string
  default     = "mlflow"
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted S3 object version is kept before it expires."
  type        = number
  default     = 90
}

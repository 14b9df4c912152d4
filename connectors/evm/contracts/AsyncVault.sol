// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Permissioned} from "./Permissioned.sol";

/// @notice ERC-7540 operators: an operator may request and claim on a controller's behalf.
interface IERC7540Operator {
    event OperatorSet(address indexed controller, address indexed operator, bool approved);

    function setOperator(address operator, bool approved) external returns (bool);

    function isOperator(address controller, address operator) external view returns (bool status);
}

/// @notice ERC-7540 asynchronous deposits (ERC-165 id 0xce3bbe50 with the two claim overloads).
interface IERC7540Deposit {
    event DepositRequest(
        address indexed controller, address indexed owner, uint256 indexed requestId, address sender, uint256 assets
    );

    function requestDeposit(uint256 assets, address controller, address owner) external returns (uint256 requestId);

    function pendingDepositRequest(uint256 requestId, address controller) external view returns (uint256 pendingAssets);

    function claimableDepositRequest(uint256 requestId, address controller)
        external
        view
        returns (uint256 claimableAssets);

    function deposit(uint256 assets, address receiver, address controller) external returns (uint256 shares);

    function mint(uint256 shares, address receiver, address controller) external returns (uint256 assets);
}

/// @notice ERC-7540 asynchronous redemptions (ERC-165 id 0x620ee8e4).
interface IERC7540Redeem {
    event RedeemRequest(
        address indexed controller, address indexed owner, uint256 indexed requestId, address sender, uint256 shares
    );

    function requestRedeem(uint256 shares, address controller, address owner) external returns (uint256 requestId);

    function pendingRedeemRequest(uint256 requestId, address controller) external view returns (uint256 pendingShares);

    function claimableRedeemRequest(uint256 requestId, address controller)
        external
        view
        returns (uint256 claimableShares);
}

/// @notice ERC-7575: the share token of a vault (here the vault itself).
interface IERC7575Share {
    function share() external view returns (address);
}

/// @notice A tokenized fund with asynchronous subscriptions and redemptions, written from ERC-7540 on
/// OpenZeppelin 5's ERC-4626, the way Centrifuge's vaults behave:
/// - `requestDeposit` pulls the stablecoin into the vault (Pending); the fund manager (owner)
///   `fulfillDeposit`s at the NAV of that moment, minting the shares into escrow (Claimable); the
///   controller claims them with `deposit`/`mint`. `requestRedeem` escrows the shares (Pending);
///   `fulfillRedeem` burns them at the NAV of that moment and reserves the stablecoin (Claimable);
///   the controller claims it with `redeem`/`withdraw`.
/// - Request id 0 for all requests: a controller's requests on one side are aggregated.
/// - No event when a request becomes claimable, nothing is ever pushed to the investor, and every
///   `preview*` reverts because both sides are asynchronous. `max*` are the claimable amounts.
/// - Shares are permissioned (`Permissioned`): controllers, owners and receivers must be verified.
contract AsyncVault is ERC4626, Permissioned, IERC7540Operator, IERC7540Deposit, IERC7540Redeem, IERC7575Share {
    using SafeERC20 for IERC20;
    using Math for uint256;

    uint256 public constant REQUEST_ID = 0;

    mapping(address => uint256) private _pendingDepositAssets;
    mapping(address => uint256) private _claimableDepositAssets;
    mapping(address => uint256) private _claimableDepositShares;
    mapping(address => uint256) private _pendingRedeemShares;
    mapping(address => uint256) private _claimableRedeemShares;
    mapping(address => uint256) private _claimableRedeemAssets;
    mapping(address => mapping(address => bool)) public isOperator;

    /// @dev Stablecoin in the vault that is not the fund's: waiting deposits and reserved redemptions.
    uint256 public totalPendingDepositAssets;
    uint256 public totalClaimableRedeemAssets;

    event NavSet(uint256 totalAssets, uint256 totalSupply);

    error AsyncPreviewDisabled();
    error NotOwnerOrOperator(address owner, address caller);
    error NotControllerOrOperator(address controller, address caller);
    error ZeroAmount();
    error ExceedsPending(address controller, uint256 requested, uint256 pending);

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_)
        ERC20(name_, symbol_)
        ERC4626(asset_)
        Ownable(owner_)
    {}

    function _decimalsOffset() internal pure override returns (uint8) {
        return 12;
    }

    function share() external view returns (address) {
        return address(this);
    }

    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == 0x01ffc9a7 // ERC-165
            || interfaceId == type(IERC7540Operator).interfaceId || interfaceId == type(IERC7540Deposit).interfaceId
            || interfaceId == type(IERC7540Redeem).interfaceId || interfaceId == type(IERC7575Share).interfaceId;
    }

    // -- the fund's assets and NAV ---------------------------------------------------------------

    function totalAssets() public view override returns (uint256) {
        return IERC20(asset()).balanceOf(address(this)) - totalPendingDepositAssets - totalClaimableRedeemAssets;
    }

    /// @notice The manager books a valuation: the vault's own assets become `target`.
    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            IERC20(asset()).safeTransferFrom(msg.sender, address(this), target - held);
        } else if (target < held) {
            IERC20(asset()).safeTransfer(msg.sender, held - target);
        }
        emit NavSet(target, totalSupply());
    }

    // -- operators ----------------------------------------------------------------------------------

    function setOperator(address operator, bool approved) external returns (bool) {
        isOperator[msg.sender][operator] = approved;
        emit OperatorSet(msg.sender, operator, approved);
        return true;
    }

    function _checkController(address controller) internal view {
        if (controller != msg.sender && !isOperator[controller][msg.sender]) {
            revert NotControllerOrOperator(controller, msg.sender);
        }
    }

    function _checkVerified(address account) internal view {
        if (!isVerified(account)) revert NotVerified(account);
    }

    // -- deposits -------------------------------------------------------------------------------------

    function requestDeposit(uint256 assets, address controller, address owner) external returns (uint256) {
        if (owner != msg.sender && !isOperator[owner][msg.sender]) revert NotOwnerOrOperator(owner, msg.sender);
        if (assets == 0) revert ZeroAmount();
        _checkVerified(controller);
        _checkVerified(owner);
        IERC20(asset()).safeTransferFrom(owner, address(this), assets);
        _pendingDepositAssets[controller] += assets;
        totalPendingDepositAssets += assets;
        emit DepositRequest(controller, owner, REQUEST_ID, msg.sender, assets);
        return REQUEST_ID;
    }

    function pendingDepositRequest(uint256 requestId, address controller) external view returns (uint256) {
        return requestId == REQUEST_ID ? _pendingDepositAssets[controller] : 0;
    }

    function claimableDepositRequest(uint256 requestId, address controller) external view returns (uint256) {
        return requestId == REQUEST_ID ? _claimableDepositAssets[controller] : 0;
    }

    /// @notice The manager accepts `assets` of a controller's pending deposit at today's NAV.
    function fulfillDeposit(address controller, uint256 assets) external onlyOwner returns (uint256 shares) {
        uint256 pending = _pendingDepositAssets[controller];
        if (assets == 0) revert ZeroAmount();
        if (assets > pending) revert ExceedsPending(controller, assets, pending);
        shares = _convertToShares(assets, Math.Rounding.Floor); // the NAV before these assets join the fund
        _pendingDepositAssets[controller] = pending - assets;
        totalPendingDepositAssets -= assets;
        _mint(address(this), shares);
        _claimableDepositAssets[controller] += assets;
        _claimableDepositShares[controller] += shares;
    }

    function maxDeposit(address controller) public view override returns (uint256) {
        return _claimableDepositAssets[controller];
    }

    function maxMint(address controller) public view override returns (uint256) {
        return _claimableDepositShares[controller];
    }

    function deposit(uint256 assets, address receiver) public override returns (uint256) {
        return deposit(assets, receiver, msg.sender);
    }

    function deposit(uint256 assets, address receiver, address controller) public returns (uint256 shares) {
        _checkController(controller);
        uint256 maxAssets = _claimableDepositAssets[controller];
        if (assets > maxAssets) revert ERC4626ExceededMaxDeposit(controller, assets, maxAssets);
        shares = assets.mulDiv(_claimableDepositShares[controller], maxAssets, Math.Rounding.Floor);
        _claimDeposit(controller, receiver, assets, shares);
    }

    function mint(uint256 shares, address receiver) public override returns (uint256) {
        return mint(shares, receiver, msg.sender);
    }

    function mint(uint256 shares, address receiver, address controller) public returns (uint256 assets) {
        _checkController(controller);
        uint256 maxShares = _claimableDepositShares[controller];
        if (shares > maxShares) revert ERC4626ExceededMaxMint(controller, shares, maxShares);
        assets = shares.mulDiv(_claimableDepositAssets[controller], maxShares, Math.Rounding.Ceil);
        _claimDeposit(controller, receiver, assets, shares);
    }

    function _claimDeposit(address controller, address receiver, uint256 assets, uint256 shares) internal {
        if (assets == 0 && shares == 0) revert ZeroAmount();
        _claimableDepositAssets[controller] -= assets;
        _claimableDepositShares[controller] -= shares;
        _transfer(address(this), receiver, shares);
        emit Deposit(controller, receiver, assets, shares);
    }

    // -- redemptions ----------------------------------------------------------------------------------

    function requestRedeem(uint256 shares, address controller, address owner) external returns (uint256) {
        if (owner != msg.sender && !isOperator[owner][msg.sender]) _spendAllowance(owner, msg.sender, shares);
        if (shares == 0) revert ZeroAmount();
        _checkVerified(controller);
        _transfer(owner, address(this), shares);
        _pendingRedeemShares[controller] += shares;
        emit RedeemRequest(controller, owner, REQUEST_ID, msg.sender, shares);
        return REQUEST_ID;
    }

    function pendingRedeemRequest(uint256 requestId, address controller) external view returns (uint256) {
        return requestId == REQUEST_ID ? _pendingRedeemShares[controller] : 0;
    }

    function claimableRedeemRequest(uint256 requestId, address controller) external view returns (uint256) {
        return requestId == REQUEST_ID ? _claimableRedeemShares[controller] : 0;
    }

    /// @notice The manager redeems `shares` of a controller's pending redemption at today's NAV and
    /// sets the stablecoin aside for the claim.
    function fulfillRedeem(address controller, uint256 shares) external onlyOwner returns (uint256 assets) {
        uint256 pending = _pendingRedeemShares[controller];
        if (shares == 0) revert ZeroAmount();
        if (shares > pending) revert ExceedsPending(controller, shares, pending);
        assets = _convertToAssets(shares, Math.Rounding.Floor);
        _pendingRedeemShares[controller] = pending - shares;
        _burn(address(this), shares);
        _claimableRedeemShares[controller] += shares;
        _claimableRedeemAssets[controller] += assets;
        totalClaimableRedeemAssets += assets;
    }

    function maxRedeem(address controller) public view override returns (uint256) {
        return _claimableRedeemShares[controller];
    }

    function maxWithdraw(address controller) public view override returns (uint256) {
        return _claimableRedeemAssets[controller];
    }

    function redeem(uint256 shares, address receiver, address controller) public override returns (uint256 assets) {
        _checkController(controller);
        uint256 maxShares = _claimableRedeemShares[controller];
        if (shares > maxShares) revert ERC4626ExceededMaxRedeem(controller, shares, maxShares);
        assets = shares.mulDiv(_claimableRedeemAssets[controller], maxShares, Math.Rounding.Floor);
        _claimRedeem(controller, receiver, assets, shares);
    }

    function withdraw(uint256 assets, address receiver, address controller) public override returns (uint256 shares) {
        _checkController(controller);
        uint256 maxAssets = _claimableRedeemAssets[controller];
        if (assets > maxAssets) revert ERC4626ExceededMaxWithdraw(controller, assets, maxAssets);
        shares = assets.mulDiv(_claimableRedeemShares[controller], maxAssets, Math.Rounding.Ceil);
        _claimRedeem(controller, receiver, assets, shares);
    }

    function _claimRedeem(address controller, address receiver, uint256 assets, uint256 shares) internal {
        if (assets == 0 && shares == 0) revert ZeroAmount();
        _claimableRedeemShares[controller] -= shares;
        _claimableRedeemAssets[controller] -= assets;
        totalClaimableRedeemAssets -= assets;
        IERC20(asset()).safeTransfer(receiver, assets);
        emit Withdraw(msg.sender, receiver, controller, assets, shares);
    }

    // -- the async sides have no previews (ERC-7540: MUST revert for all callers and inputs) -----------

    function previewDeposit(uint256) public pure override returns (uint256) {
        revert AsyncPreviewDisabled();
    }

    function previewMint(uint256) public pure override returns (uint256) {
        revert AsyncPreviewDisabled();
    }

    function previewRedeem(uint256) public pure override returns (uint256) {
        revert AsyncPreviewDisabled();
    }

    function previewWithdraw(uint256) public pure override returns (uint256) {
        revert AsyncPreviewDisabled();
    }

    /// @dev The vault's own escrow moves freely; every other holder must be verified.
    function _update(address from, address to, uint256 value) internal override {
        _checkTransfer(from == address(this) ? address(0) : from, to == address(this) ? address(0) : to);
        super._update(from, to, value);
    }
}
